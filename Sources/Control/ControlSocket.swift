import Glibc
import SystemPackage

/// Where the control socket lives and how both ends open it.
///
/// By default it sits beside the mount point, hidden, named after it:
/// mount point `/x/mnt` → `/x/.mnt.iommufs-ctl`. So `iommufs ctl --mount
/// MNT` finds it from the mount point alone, it is not inside the mounted
/// tree (which must look like /sys), and two mounts in one directory get
/// two sockets.
public enum ControlSocket {
    /// The socket path for the mount point at `mountpoint` (canonical: the
    /// server and the client resolve it with realpath first).
    public static func defaultPath(forMountpoint mountpoint: String) -> String {
        let trimmed = mountpoint.count > 1 && mountpoint.hasSuffix("/") ? String(mountpoint.dropLast()) : mountpoint
        guard let slash = trimmed.lastIndex(of: "/") else { return "." + trimmed + ".iommufs-ctl" }
        let directory = trimmed[...slash]
        return directory + "." + trimmed[trimmed.index(after: slash)...] + ".iommufs-ctl"
    }

    /// `defaultPath` for a mount point given as typed (relative, with links).
    public static func defaultPath(forMountpointAt path: String) throws(ControlFailure) -> String {
        guard let resolved = realpath(path, nil) else {
            let errno = Errno(rawValue: Glibc.errno)
            throw ControlFailure(errno, "cannot resolve the mount point \(path): \(errno)")
        }
        defer { free(resolved) }
        return defaultPath(forMountpoint: String(cString: resolved))
    }

    /// A connected client socket.
    static func connect(to path: String) throws(ControlFailure) -> Int32 {
        var address = try self.address(path) { ControlFailure(.fileNameTooLong, "cannot connect to \(path): the path is longer than \($0) bytes") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlFailure(Errno(rawValue: Glibc.errno), "cannot create a socket") }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let errno = Errno(rawValue: Glibc.errno)
            close(fd)
            let hint = errno == .noSuchFileOrDirectory || errno == .connectionRefused ? " (is iommufs serving that mount?)" : ""
            throw ControlFailure(errno, "cannot connect to \(path): \(errno)\(hint)")
        }
        return fd
    }

    /// A listening socket at `path`, mode 0600. A socket left there by a
    /// server that was killed (nobody accepts on it) is replaced; a live one,
    /// or any other kind of file, is an error.
    static func listen(at path: String) throws(ControlSocketError) -> Int32 {
        var address = try self.address(path) { ControlSocketError(path: path, reason: "the path is longer than \($0) bytes") }
        try removeStaleSocket(at: path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(path: path, reason: "socket: \(Errno(rawValue: Glibc.errno))") }
        // The mode comes from the umask at bind time: no moment at 0755.
        let previous = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindError = Errno(rawValue: Glibc.errno)
        umask(previous)
        guard bound == 0 else {
            close(fd)
            throw ControlSocketError(path: path, reason: "bind: \(bindError)")
        }
        guard Glibc.listen(fd, 16) == 0 else {
            let error = Errno(rawValue: Glibc.errno)
            close(fd)
            unlink(path)
            throw ControlSocketError(path: path, reason: "listen: \(error)")
        }
        return fd
    }

    private static func removeStaleSocket(at path: String) throws(ControlSocketError) {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw ControlSocketError(path: path, reason: "a file that is not a socket is in the way (remove it, or choose another --control path)")
        }
        if let fd = try? connect(to: path) {
            close(fd)
            throw ControlSocketError(path: path, reason: "another server is listening on it")
        }
        unlink(path)
    }

    /// The `sockaddr_un` for `path`; `tooLong` makes the error for paths
    /// that do not fit (it gets the limit).
    private static func address<E: Error>(_ path: String, tooLong: (Int) -> E) throws(E) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        let bytes = Array(path.utf8)
        guard bytes.count < capacity else { throw tooLong(capacity - 1) }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }
}

/// Why the control socket could not be set up at mount time.
public struct ControlSocketError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String

    public var description: String { "control socket \(path): \(reason)" }
}
