import Glibc
import SystemPackage

/// The kernel's errno names (`EPERM`), which the control protocol carries
/// and `iommufs ctl` prints; swift-system only knows the texts.
extension Errno {
    /// `EPERM`; a number the table lacks is written `errno 123`.
    public var kernelName: String {
        Self.names.first { $0.errno == self }?.name ?? "errno \(rawValue)"
    }

    /// The errno called `name` (`ENOMEM`), or written `errno 12`.
    public init?(kernelName name: String) {
        if let entry = Self.names.first(where: { $0.name == name }) {
            self = entry.errno
        } else if name.hasPrefix("errno "), let number = Int32(name.dropFirst(6)), number > 0 {
            self.init(rawValue: number)
        } else {
            return nil
        }
    }

    /// The names `Errno(kernelName:)` knows, for help texts and messages.
    public static var kernelNames: [String] { names.map(\.name) }

    private static let names: [(name: String, errno: Errno)] = [
        ("EPERM", Glibc.EPERM), ("ENOENT", Glibc.ENOENT), ("ESRCH", Glibc.ESRCH), ("EINTR", Glibc.EINTR), ("EIO", Glibc.EIO), ("ENXIO", Glibc.ENXIO),
        ("E2BIG", Glibc.E2BIG), ("EBADF", Glibc.EBADF), ("EAGAIN", Glibc.EAGAIN), ("ENOMEM", Glibc.ENOMEM), ("EACCES", Glibc.EACCES),
        ("EFAULT", Glibc.EFAULT), ("EBUSY", Glibc.EBUSY), ("EEXIST", Glibc.EEXIST), ("EXDEV", Glibc.EXDEV), ("ENODEV", Glibc.ENODEV),
        ("ENOTDIR", Glibc.ENOTDIR), ("EISDIR", Glibc.EISDIR), ("EINVAL", Glibc.EINVAL), ("ENFILE", Glibc.ENFILE), ("EMFILE", Glibc.EMFILE),
        ("ENOTTY", Glibc.ENOTTY), ("EFBIG", Glibc.EFBIG), ("ENOSPC", Glibc.ENOSPC), ("ESPIPE", Glibc.ESPIPE), ("EROFS", Glibc.EROFS),
        ("EPIPE", Glibc.EPIPE), ("EDOM", Glibc.EDOM), ("ERANGE", Glibc.ERANGE), ("EDEADLK", Glibc.EDEADLK), ("ENAMETOOLONG", Glibc.ENAMETOOLONG),
        ("ENOSYS", Glibc.ENOSYS), ("ENOTEMPTY", Glibc.ENOTEMPTY), ("ELOOP", Glibc.ELOOP), ("ENODATA", Glibc.ENODATA), ("ENOLINK", Glibc.ENOLINK),
        ("EPROTO", Glibc.EPROTO), ("EOVERFLOW", Glibc.EOVERFLOW), ("EILSEQ", Glibc.EILSEQ), ("ENOTSOCK", Glibc.ENOTSOCK),
        ("EOPNOTSUPP", Glibc.EOPNOTSUPP), ("EADDRINUSE", Glibc.EADDRINUSE), ("ENETDOWN", Glibc.ENETDOWN), ("ECONNABORTED", Glibc.ECONNABORTED),
        ("ECONNRESET", Glibc.ECONNRESET), ("ENOBUFS", Glibc.ENOBUFS), ("ENOTCONN", Glibc.ENOTCONN), ("ETIMEDOUT", Glibc.ETIMEDOUT),
        ("ECONNREFUSED", Glibc.ECONNREFUSED), ("EALREADY", Glibc.EALREADY), ("ESTALE", Glibc.ESTALE), ("EINPROGRESS", Glibc.EINPROGRESS), ("ECANCELED", Glibc.ECANCELED),
        ("EPROBE_DEFER", probeDeferErrno.rawValue),
    ].map { ($0.0, Errno(rawValue: $0.1)) }
}
