import Glibc
import Logging
import SystemPackage

/// Checks and cleaning of a mount point before mounting on it.
///
/// Policy, chosen to match what the kernel and fusermount do while avoiding
/// the traps a FUSE user meets:
/// - a stale mount (its server was killed; every access fails with ENOTCONN)
///   is detached and reported, since nothing can use it any more;
/// - a live iommufs mount is refused: mounting over it would hide it and
///   leave its server running unseen;
/// - a directory with entries is refused unless `-o nonempty` allows it:
///   libfuse 3 and the kernel mount over anything (FUSE 2's fusermount
///   refused without that option), and a mount that silently hides files,
///   say after `iommufs mount .`, is a mistake far more often than not;
/// - any other mount with an empty root (e.g. a tmpfs) is mounted over, as
///   mount(8) would.
///
/// Two servers started on one directory at the same moment must not both
/// pass these checks and then mount one over the other: the loser, failing
/// later (its control socket is taken), would unmount by path, and so
/// detach the mount on top, the winner's. So the last checks and the mount
/// are one step for iommufs servers: `whileClaimed` holds an exclusive
/// flock on the mount point's parent directory across them, and the second
/// server, once it gets the lock, finds the first one's mount and is
/// refused. Under the lock only the mount table and the directory itself
/// are read: the stale-mount check asks a server mounted there (statfs),
/// which may take its time, so it runs before, and a slow server holds up
/// only the one mounting over it, not every server mounting beside it. A
/// dead mount found then is detached under the lock, if it is still there:
/// another server may have detached it and mounted meanwhile, and a detach
/// by path would take that server's mount.
enum MountPoint {
    /// Runs `mount` with the canonical path of the directory at `path` once
    /// it is ready to mount on, with the mount point claimed (see above)
    /// until `mount` returns.
    static func whileClaimed<R>(_ path: String, allowNonEmpty: Bool, logger: Logger,
                                _ mount: (String) throws(FuseServerError) -> R) throws(FuseServerError) -> R {
        let canonical = try canonicalPath(path)
        let dead = try deadMount(at: canonical, as: path)
        let lock = lockParent(of: canonical)
        defer { if lock >= 0 { close(lock) } }
        // Still there: no other server detached it (and mounted) meanwhile.
        // Mount ids are reused at once, so a new mount may have the dead
        // one's id: it is asked again (a dead mount answers at once, a new
        // one once its server serves, which does not wait for this lock).
        if let dead, topmostMount(on: canonical)?.id == dead, try deadMount(at: canonical, as: path) != nil {
            try detach(canonical, as: path, logger: logger)
            if try deadMount(at: canonical, as: path) != nil { throw .staleMount(path, reason: "another one is under it") }
        }
        if topmostMount(on: canonical, ofType: iommufsType) != nil { throw .alreadyMounted(canonical) }
        if !allowNonEmpty, try hasEntries(canonical, as: path) { throw .mountpointNotEmpty(path) }
        return try mount(canonical)
    }

    /// The mount table's id of a dead mount on `canonical` (`path` as the
    /// user typed it, for messages); nil if a directory answers there.
    private static func deadMount(at canonical: String, as path: String) throws(FuseServerError) -> Substring? {
        let topmost = topmostMount(on: canonical)?.id
        switch try status(of: canonical, as: path) {
        case .directory: return nil
        case .notADirectory: throw .mountpointNotADirectory(path)
        case .staleMount: return topmost
        }
    }

    /// realpath(3): the same directory typed two ways is one mount point
    /// (realpath reads links, it does not stat: a dead mount resolves too).
    private static func canonicalPath(_ path: String) throws(FuseServerError) -> String {
        guard let resolved = Glibc.realpath(path, nil) else {
            let errno = Errno.last
            throw errno == .noSuchFileOrDirectory ? .mountpointMissing(path) : .mountpointInaccessible(path, errno)
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// An exclusive flock on the parent directory of `canonicalPath`, which
    /// no mount on the mount point itself can hide; -1 (no claim, as before
    /// this lock existed) where the parent cannot be opened for reading or
    /// its file system has no flock.
    private static func lockParent(of canonicalPath: String) -> Int32 {
        let slash = canonicalPath.lastIndex(of: "/") ?? canonicalPath.startIndex
        let parent = slash == canonicalPath.startIndex ? "/" : String(canonicalPath[..<slash])
        let fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return -1 }
        while flock(fd, LOCK_EX) != 0 {
            guard Errno.last == .interrupted else {
                close(fd)
                return -1
            }
        }
        return fd
    }

    /// True if the directory lists anything besides `.` and `..`.
    private static func hasEntries(_ canonical: String, as path: String) throws(FuseServerError) -> Bool {
        guard let directory = opendir(canonical) else { throw .mountpointInaccessible(path, .last) }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { return true }
        }
        return false
    }

    private enum Status { case directory, notADirectory, staleMount }

    /// statvfs tells a dead FUSE mount (ENOTCONN): FUSE always forwards
    /// STATFS to the server, while stat may be answered from the kernel's
    /// attribute cache for up to a second after the server died.
    private static func status(of canonical: String, as path: String) throws(FuseServerError) -> Status {
        var fs = statvfs()
        var st = stat()
        guard statvfs(canonical, &fs) == 0, stat(canonical, &st) == 0 else {
            switch Errno.last {
            case .socketNotConnected: return .staleMount   // ENOTCONN
            case .noSuchFileOrDirectory: throw .mountpointMissing(path)
            case let errno: throw .mountpointInaccessible(path, errno)
            }
        }
        return st.st_mode & S_IFMT == S_IFDIR ? .directory : .notADirectory
    }

    /// Lazily detaches the dead mount: umount2(MNT_DETACH) as root, else
    /// `fusermount3 -u -z` (setuid, allowed for the user who mounted it).
    private static func detach(_ canonical: String, as path: String, logger: Logger) throws(FuseServerError) {
        if umount2(canonical, Int32(MNT_DETACH)) != 0 {
            let umountError = Errno.last
            guard umountError == .notPermitted else { throw .staleMount(path, reason: "umount2: \(umountError)") }
            guard let status = run("fusermount3", ["-u", "-z", canonical]), status == 0 else {
                throw .staleMount(path, reason: "umount2: \(umountError), and fusermount3 -u -z failed")
            }
        }
        logger.notice("cleaned up a stale mount at \(path)")
    }

    /// Makes every request pending on the FUSE connection mounted at
    /// `canonicalPath` fail (ENOTCONN), and detaches the mount: the way out
    /// when a caller waits for an answer the server will never send.
    /// As root: umount2(MNT_FORCE | MNT_DETACH) (FUSE aborts the connection
    /// on a forced unmount). Otherwise: the connection's `abort` file in
    /// fusectl (writable by the user who mounted), then `fusermount3 -u -z`.
    /// False if neither worked.
    static func abortConnection(at canonicalPath: String) -> Bool {
        if umount2(canonicalPath, Int32(MNT_FORCE | MNT_DETACH)) == 0 { return true }
        guard let minor = topmostMount(on: canonicalPath, ofType: iommufsType)?.minor else { return false }
        let fd = open("/sys/fs/fuse/connections/\(minor)/abort", O_WRONLY)
        guard fd >= 0 else { return false }
        let written = write(fd, "1", 1)
        close(fd)
        guard written == 1 else { return false }
        _ = run("fusermount3", ["-u", "-z", canonicalPath])
        return true
    }

    /// The file system type of iommufs mounts (`subtype=iommufs`).
    private static let iommufsType = "fuse.iommufs"

    /// One line of /proc/self/mountinfo.
    private struct MountEntry {
        /// The mount's id, unique while it is mounted.
        var id: Substring
        /// The minor device number of its superblock: for a FUSE mount the
        /// fusectl connection number.
        var minor: Substring
    }

    /// The topmost mount on `canonicalPath` (of file system `type`, if
    /// given), from /proc/self/mountinfo: a stat of the mount could hang on
    /// it. Later lines are mounted later, so the last match is on top.
    private static func topmostMount(on canonicalPath: String, ofType type: String? = nil) -> MountEntry? {
        guard let table = try? readFile("/proc/self/mountinfo") else { return nil }
        // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
        var topmost: MountEntry?
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, unescapeMountField(fields[4]) == canonicalPath,
                  let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count,
                  type.map({ fields[separator + 1] == $0 }) ?? true,
                  let minor = fields[2].split(separator: ":").last else { continue }
            topmost = MountEntry(id: fields[0], minor: minor)
        }
        return topmost
    }

    /// /proc/self/mountinfo writes space, tab, newline and backslash as `\ooo`.
    private static func unescapeMountField(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = field.utf8[...]
        while let byte = utf8.popFirst() {
            let octal = utf8.prefix(3)
            if byte == UInt8(ascii: "\\"), octal.count == 3, let code = UInt8(String(decoding: octal, as: UTF8.self), radix: 8) {
                bytes.append(code)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readFile(_ path: FilePath) throws -> String {
        let file = try FileDescriptor.open(path, .readOnly)
        defer { try? file.close() }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try chunk.withUnsafeMutableBytes { try file.read(into: $0) }
            if count == 0 { return String(decoding: contents, as: UTF8.self) }
            contents += chunk[..<count]
        }
    }

    /// Runs `program` (looked up in PATH) and returns its exit status, or nil
    /// if it could not be started or did not exit normally.
    private static func run(_ program: String, _ arguments: [String]) -> Int32? {
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawnp(&pid, program, nil, nil, argv, nil) == 0 else { return nil }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard Errno.last == .interrupted else { return nil }
        }
        // WIFEXITED / WEXITSTATUS are macros Swift does not import.
        return status & 0x7f == 0 ? (status >> 8) & 0xff : nil
    }
}

extension Errno {
    /// The calling thread's `errno` (swift-system keeps its own accessor internal).
    static var last: Errno { Errno(rawValue: Glibc.errno) }
}
