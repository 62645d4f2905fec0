import CFuse
import Sysfs

/// Objects kept in `fuse_file_info.fh` from OPEN/OPENDIR to RELEASE/RELEASEDIR.
///
/// The handle owns one reference, taken when it is stored and dropped on
/// release; the requests in between only borrow the object.
enum OpenHandle<Object: AnyObject> {
    static func store(_ object: Object, in fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(object).toOpaque()))
    }

    static func borrow(_ fi: UnsafeMutablePointer<fuse_file_info>) -> Object {
        unmanaged(fi).takeUnretainedValue()
    }

    static func release(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        unmanaged(fi).release()
        fi.pointee.fh = 0
    }

    private static func unmanaged(_ fi: UnsafeMutablePointer<fuse_file_info>) -> Unmanaged<Object> {
        Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!)
    }
}
