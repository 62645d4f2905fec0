import Foundation
import Glibc

/// A running `iommufs mount --foreground` on a private temporary directory.
///
/// `MountedMachine.with { mnt in ... }` mounts, runs the body and always
/// unmounts and reaps the server, also when the body throws or an
/// expectation fails, so parallel tests never leave mounts behind.
struct MountedMachine {
    let root: String
    let server: Subprocess
    /// The server's stderr goes to a file, so nothing can block on it.
    let logPath: String

    /// The iommufs binary: `IOMMUFS_BIN` (set by `make test`), else the one
    /// beside the test bundle in the build directory.
    static var binary: String {
        if let path = getenv("IOMMUFS_BIN") { return String(cString: path) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/iommufs"
    }

    struct MountError: Error, CustomStringConvertible {
        var description: String
    }

    static func with<R>(arguments: [String] = [], _ body: (MountedMachine) throws -> R) throws -> R {
        let machine = try start(arguments: arguments)
        defer { machine.stop() }
        return try body(machine)
    }

    /// Starts a server on a new temporary directory (or `root`) and waits
    /// until the mount answers.
    static func start(arguments: [String], root: String? = nil) throws -> MountedMachine {
        let dir = try root ?? makeTemporaryDirectory()
        let logPath = dir + ".log"
        let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        defer { close(log) }
        let server = try Subprocess.spawn(binary, ["mount", dir, "--foreground", "-o", "allow_other"] + arguments,
                                          stderr: log)
        let machine = MountedMachine(root: dir, server: server, logPath: logPath)
        for _ in 0..<2000 where !machine.isMounted {
            var status: Int32?
            guard server.isRunning(exitStatus: &status) else {
                let message = machine.serverLog
                machine.stop()
                throw MountError(description: "iommufs exited (\(status ?? -1)) without mounting \(dir): \(message)")
            }
            usleep(10_000)
        }
        guard machine.isMounted else {
            machine.stop()
            throw MountError(description: "iommufs did not mount \(dir) within 20 s")
        }
        return machine
    }

    /// What the server printed on stderr so far.
    var serverLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// True once the FUSE file system answers at `root`.
    var isMounted: Bool { isMountPoint(root) && access(root + "/kernel/iommu_groups", F_OK) == 0 }

    /// Unmounts, waits for the server to exit (killing it if it hangs) and
    /// removes the directory and the log.
    func stop() {
        run("/bin/fusermount3", ["-u", root])
        var status: Int32?
        for _ in 0..<1000 where server.isRunning(exitStatus: &status) { usleep(10_000) }
        if server.isRunning(exitStatus: &status) {
            kill(server.pid, SIGKILL)
            server.wait()
        }
        if isMountPoint(root) { run("/bin/umount", ["-l", root]) }
        // Left behind only by a server that had to be killed.
        unlink(controlSocket)
        rmdir(root)
        unlink(logPath)
    }

    /// Absolute path of `relative` inside the mount.
    func path(_ relative: String) -> String { root + "/" + relative }
}

/// True if `path` is listed as a mount point in /proc/self/mountinfo.
func isMountPoint(_ path: String) -> Bool {
    guard let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
    return mounts.split(separator: "\n").contains { $0.split(separator: " ")[4] == path }
}

func makeTemporaryDirectory() throws -> String {
    var template = Array("/tmp/iommufs-test.XXXXXX".utf8CString)
    guard let dir = mkdtemp(&template) else { throw MountedMachine.MountError(description: "mkdtemp failed") }
    return String(cString: dir)
}

/// Output of a finished command.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `executable` with `arguments` and waits for it.
@discardableResult
func run(_ executable: String, _ arguments: [String]) -> CommandResult {
    let out = CapturePipe(), err = CapturePipe()
    guard let child = try? Subprocess.spawn(executable, arguments, stdout: out.writeEnd, stderr: err.writeEnd) else {
        _ = (out.drain(), err.drain())
        return CommandResult(status: -1, stdout: "", stderr: "cannot run \(executable)")
    }
    // Drain stderr on another thread so a chatty child cannot fill a pipe and stall.
    let stderr = DrainedText()
    let reader = Thread { stderr.set(err.drain()) }
    reader.start()
    let stdout = out.drain()
    let status = child.wait()
    return CommandResult(status: status, stdout: stdout, stderr: stderr.wait())
}

/// Text that another thread delivers once.
final class DrainedText: @unchecked Sendable {
    private let done = NSCondition()
    private var text: String?

    func set(_ value: String) {
        done.lock(); text = value; done.signal(); done.unlock()
    }

    func wait() -> String {
        done.lock(); defer { done.unlock() }
        while text == nil { done.wait() }
        return text!
    }
}

/// `sh -c script`, as a user's shell script would run it.
@discardableResult
func sh(_ script: String) -> CommandResult { run("/bin/sh", ["-c", script]) }

/// `bash -c script`: unlike dash, which reports every failed write as
/// "I/O error", bash prints the errno's text.
@discardableResult
func bash(_ script: String) -> CommandResult { run("/bin/bash", ["-c", script]) }
