import SystemPackage

/// How to mount and run a `FuseServer`.
public struct MountOptions: Sendable {
    /// The directory to mount on. Relative paths are resolved when mounting,
    /// so the server keeps working after `FuseServer.daemonize` changes the
    /// working directory to `/`.
    public var mountpoint: String
    /// Let every user reach the mount (`-o allow_other`), as everybody can
    /// read /sys. Non-root servers need `user_allow_other` in /etc/fuse.conf.
    public var allowOther: Bool
    /// Serve requests on one thread (`fuse_session_loop`) instead of
    /// libfuse's worker pool. Measured 20-25 % cheaper per request on a
    /// 2-vCPU machine when client and server share a CPU.
    public var singleThreaded: Bool
    /// libfuse's `-d`: log every request on stderr.
    public var debug: Bool
    /// Mount on a directory that has entries (`-o nonempty`), hiding them
    /// while mounted; refused otherwise (see `MountPoint`).
    public var allowNonEmpty: Bool

    public init(mountpoint: String, allowOther: Bool = false, singleThreaded: Bool = false, debug: Bool = false,
                allowNonEmpty: Bool = false) {
        self.mountpoint = mountpoint
        self.allowOther = allowOther
        self.singleThreaded = singleThreaded
        self.debug = debug
        self.allowNonEmpty = allowNonEmpty
    }
}

/// Why a `FuseServer` could not be set up. Each description says what went
/// wrong and, where there is one, what to do about it.
public enum FuseServerError: Error, CustomStringConvertible {
    case mountpointMissing(String)
    case mountpointNotADirectory(String)
    case mountpointInaccessible(String, Errno)
    /// The directory has entries and `-o nonempty` was not given.
    case mountpointNotEmpty(String)
    /// A dead server left a mount behind (ENOTCONN) and it could not be detached.
    case staleMount(String, reason: String)
    /// Another iommufs already serves this directory.
    case alreadyMounted(String)
    /// libfuse refused the session; it printed the reason on stderr.
    case sessionCreationFailed
    case mountFailed(String, Errno?)
    case daemonizeFailed

    public var description: String {
        switch self {
        case .mountpointMissing(let path):
            return "mount point \(path) does not exist"
        case .mountpointNotADirectory(let path):
            return "mount point \(path) is not a directory"
        case .mountpointInaccessible(let path, let errno):
            return "cannot use mount point \(path): \(errno)"
        case .mountpointNotEmpty(let path):
            return "mount point \(path) is not empty: the mount would hide what is in it "
                + "(choose an empty directory, or add -o nonempty to mount over it anyway)"
        case .staleMount(let path, let reason):
            return "\(path) is a stale FUSE mount left by a server that died, and it could not be detached (\(reason)); "
                + "run `fusermount3 -uz \(path)` (or, as root, `umount -l \(path)`) and try again"
        case .alreadyMounted(let path):
            return "\(path) is already an iommufs mount point, served by another iommufs (unmount it first: fusermount3 -u \(path))"
        case .sessionCreationFailed:
            return "could not create the FUSE session (libfuse rejected the options, see above)"
        case .mountFailed(let path, let errno):
            return "could not mount on \(path)" + (errno.map { ": \($0)" } ?? " (see libfuse's message above)")
        case .daemonizeFailed:
            return "could not detach from the terminal (fuse_daemonize failed)"
        }
    }
}
