import CFuse
import Sysfs

/// One open directory (OPENDIR to RELEASEDIR): the entries as they were at
/// opendir, so that the offsets READDIR hands out stay valid however the
/// directory changes while it is listed.
///
/// Index 0 is ".", 1 is "..", `i + 2` is `children[i]`; the offset of the
/// entry at index `i` is `i + 1`, which is where the next READDIR resumes.
final class DirectoryStream: Sendable {
    let ino: UInt64
    let parentIno: UInt64
    let children: [Node]

    init(_ node: Node, children: [Node]) {
        ino = node.ino
        parentIno = node.parent?.ino ?? node.ino     // the root's ".." is itself, as in sysfs
        self.children = children
    }

    /// Number of entries, dots included.
    var count: Int { children.count + 2 }
}

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
