import Glibc
import SystemPackage

/// Checks and cleaning of a mount point before mounting on it.
///
/// Policy, chosen to match what the kernel and fusermount do while avoiding
/// the two traps a FUSE user meets:
/// - a stale mount (its server was killed; every access fails with ENOTCONN)
///   is detached and reported, since nothing can use it any more;
/// - a live iommufs mount is refused: mounting over it would hide it and
///   leave its server running unseen;
/// - any other mount (e.g. /sys inside a private mount namespace) is mounted
///   over, as mount(8) would.
enum MountPoint {
    /// The canonical path of the directory at `path`, ready to mount on.
    static func prepare(_ path: String) throws(FuseServerError) -> String {
        var status = try status(of: path)
        if status == .staleMount {
            try detachStaleMount(at: path)
            status = try Self.status(of: path)
            if status == .staleMount { throw .staleMount(path, reason: "it is still there after detaching") }
        }
        guard status == .directory else { throw .mountpointNotADirectory(path) }
        guard let canonical = realpath(path) else { throw .mountpointInaccessible(path, .last) }
        if isIommufsMount(canonical) { throw .alreadyMounted(canonical) }
        return canonical
    }

    private enum Status { case directory, notADirectory, staleMount }

    /// statvfs tells a dead FUSE mount (ENOTCONN): FUSE always forwards
    /// STATFS to the server, while stat may be answered from the kernel's
    /// attribute cache for up to a second after the server died.
    private static func status(of path: String) throws(FuseServerError) -> Status {
        var fs = statvfs()
        var st = stat()
        guard statvfs(path, &fs) == 0, stat(path, &st) == 0 else {
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
    private static func detachStaleMount(at path: String) throws(FuseServerError) {
        if umount2(path, Int32(MNT_DETACH)) != 0 {
            let umountError = Errno.last
            guard umountError == .notPermitted else { throw .staleMount(path, reason: "umount2: \(umountError)") }
            guard let status = run("fusermount3", ["-u", "-z", path]), status == 0 else {
                throw .staleMount(path, reason: "umount2: \(umountError), and fusermount3 -u -z failed")
            }
        }
        Diagnostics.log("cleaned up a stale mount at \(path)")
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
        guard let minor = connectionNumber(of: canonicalPath) else { return false }
        let fd = open("/sys/fs/fuse/connections/\(minor)/abort", O_WRONLY)
        guard fd >= 0 else { return false }
        let written = write(fd, "1", 1)
        close(fd)
        guard written == 1 else { return false }
        _ = run("fusermount3", ["-u", "-z", canonicalPath])
        return true
    }

    /// The fusectl connection number of the topmost iommufs mount on
    /// `canonicalPath`: the minor device number of its superblock, read from
    /// /proc/self/mountinfo (a stat of the mount could hang on it).
    private static func connectionNumber(of canonicalPath: String) -> Substring? {
        guard let table = try? readFile("/proc/self/mountinfo") else { return nil }
        // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
        var number: Substring?
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, unescapeMountField(fields[4]) == canonicalPath,
                  let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count,
                  fields[separator + 1] == "fuse.iommufs",
                  let minor = fields[2].split(separator: ":").last else { continue }
            number = minor
        }
        return number
    }

    /// True when the topmost mount on `canonicalPath` is an iommufs one.
    private static func isIommufsMount(_ canonicalPath: String) -> Bool {
        guard let table = try? readFile("/proc/self/mounts") else { return false }
        // "source mountpoint fstype options 0 0"; later lines are mounted
        // later, so the last match is on top.
        var topmostType: Substring?
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 2, unescapeMountField(fields[1]) == canonicalPath { topmostType = fields[2] }
        }
        return topmostType == "fuse.iommufs"
    }

    /// /proc/mounts writes space, tab, newline and backslash as `\ooo`.
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

    private static func realpath(_ path: String) -> String? {
        guard let resolved = Glibc.realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
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

/// Messages for the person running the server. Always stderr: stdout may be
/// a pipe the command line tool uses for its own output.
enum Diagnostics {
    static func log(_ message: String) {
        _ = try? FileDescriptor.standardError.writeAll(Array("iommufs: \(message)\n".utf8))
    }
}

extension Errno {
    /// The calling thread's `errno` (swift-system keeps its own accessor internal).
    static var last: Errno { Errno(rawValue: Glibc.errno) }
}
