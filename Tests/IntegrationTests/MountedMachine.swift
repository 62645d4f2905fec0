import Foundation
import Glibc

/// A running `iommufs mount --foreground` on a private temporary directory.
///
/// `MountedMachine.with { mnt in ... }` mounts, runs the body and always
/// unmounts and reaps the server, also when the body throws or an
/// expectation fails, so parallel tests never leave mounts behind.
struct MountedMachine {
    let root: String
    let process: Process

    /// The iommufs binary: `IOMMUFS_BIN` (set by `make test`), else the one
    /// beside the test bundle in the build directory.
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["IOMMUFS_BIN"] { return path }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return bundle.appendingPathComponent("iommufs").path
    }

    struct MountError: Error, CustomStringConvertible {
        var description: String
    }

    static func with<R>(arguments: [String] = [], _ body: (MountedMachine) throws -> R) throws -> R {
        let machine = try start(arguments: arguments)
        defer { machine.stop() }
        return try body(machine)
    }

    static func start(arguments: [String]) throws -> MountedMachine {
        let dir = try makeTemporaryDirectory()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["mount", dir, "--foreground", "-o", "allow_other"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let machine = MountedMachine(root: dir, process: process)
        let deadline = Date().addingTimeInterval(20)
        while !machine.isMounted {
            guard process.isRunning, Date() < deadline else {
                machine.stop()
                let message = String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
                throw MountError(description: "iommufs did not mount \(dir): \(message)")
            }
            usleep(10_000)
        }
        return machine
    }

    /// True once the FUSE file system answers at `root`.
    var isMounted: Bool {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return mounts.split(separator: "\n").contains { $0.split(separator: " ")[4] == root }
            && access(root + "/kernel/iommu_groups", F_OK) == 0
    }

    /// Unmounts, waits for the server to exit (killing it if it hangs) and
    /// removes the directory.
    func stop() {
        _ = run("/bin/fusermount3", ["-u", root])
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.interrupt()
            kill(process.processIdentifier, SIGKILL)
            _ = run("/bin/umount", ["-l", root])
        }
        process.waitUntilExit()
        rmdir(root)
    }

    /// Absolute path of `relative` inside the mount.
    func path(_ relative: String) -> String { root + "/" + relative }
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
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    do { try process.run() } catch { return CommandResult(status: -1, stdout: "", stderr: "\(error)") }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandResult(status: process.terminationStatus,
                         stdout: String(decoding: stdout, as: UTF8.self),
                         stderr: String(decoding: stderr, as: UTF8.self))
}

/// `sh -c script`, as a user's shell script would run it.
@discardableResult
func sh(_ script: String) -> CommandResult { run("/bin/sh", ["-c", script]) }

/// `bash -c script`: unlike dash, which reports every failed write as
/// "I/O error", bash prints the errno's text.
@discardableResult
func bash(_ script: String) -> CommandResult { run("/bin/bash", ["-c", script]) }
