import Foundation
import Glibc

/// Runs `executable` like `run`, but for at most `seconds` (see
/// `BoundedChild`).
func runBounded(_ executable: String, _ arguments: [String], seconds: Double = 20) -> CommandResult {
    guard let child = try? BoundedChild(executable, arguments) else {
        return CommandResult(status: -1, stdout: "", stderr: "cannot run \(executable)")
    }
    return child.finish(seconds: seconds)
}

/// A child process whose stdout and stderr go to files, finished within a
/// time limit: one still running then is killed (SIGKILL) and its result
/// has status -1 and says so on stderr, so that a hang fails the test
/// instead of hanging it. Files, not pipes: a daemon the child leaves
/// behind cannot keep a read waiting.
final class BoundedChild {
    private let process: Subprocess
    private let output = (stdout: OutputFile(), stderr: OutputFile())
    private let command: String
    private var status: Int32?

    init(_ executable: String, _ arguments: [String]) throws {
        command = ([executable] + arguments).joined(separator: " ")
        do {
            process = try Subprocess.spawn(executable, arguments, stdout: output.stdout.fd, stderr: output.stderr.fd)
        } catch {
            output.stdout.remove()
            output.stderr.remove()
            throw error
        }
    }

    var pid: pid_t { process.pid }

    /// True while the child runs.
    var isRunning: Bool { status == nil && process.isRunning(exitStatus: &status) }

    /// Waits up to `seconds` for the exit; the status (-1 if it had to be
    /// killed) and what it printed. Call once.
    func finish(seconds: Double) -> CommandResult {
        defer {
            output.stdout.remove()
            output.stderr.remove()
        }
        var note = ""
        if isRunning {
            status = process.wait(seconds: seconds)
            if status == nil {
                kill(process.pid, SIGKILL)
                // A child stuck in the kernel may not even die: never wait long.
                _ = process.wait(seconds: 5)
                note = "\n<\(command) killed after \(seconds) s>"
            }
        }
        return CommandResult(status: status ?? -1, stdout: output.stdout.text, stderr: output.stderr.text + note)
    }
}

extension Subprocess {
    /// The exit status once the child exits within `seconds`; nil if it is
    /// still running then.
    func wait(seconds: Double) -> Int32? {
        var status: Int32?
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning(exitStatus: &status) {
            guard Date() < deadline else { return nil }
            usleep(5_000)
        }
        return status
    }
}

/// A temporary file a child writes its output to.
private struct OutputFile {
    let path: String
    let fd: Int32

    init() {
        var template = Array("/tmp/iommufs-output.XXXXXX".utf8CString)
        fd = mkstemp(&template)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    var text: String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    func remove() {
        close(fd)
        unlink(path)
    }
}

/// The processes whose command line is `iommufs mount <mountpoint> ...`:
/// how a test finds a server that detached (it is nobody's child here).
func serverProcesses(mountedOn mountpoint: String) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry -> pid_t? in
        guard let pid = pid_t(entry),
              let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
        let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.count > 2 && arguments[1] == "mount" && arguments[2] == mountpoint ? pid : nil
    }
}

/// Waits up to `seconds` for process `pid` (not necessarily a child) to
/// have exited (gone, or a zombie its parent has not reaped yet); true if
/// it has.
func waitUntilGone(_ pid: pid_t, seconds: Double) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        // "pid (comm) S ...": the state follows the last ')'.
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return true }
        if stat[end...].dropFirst(2).first == "Z" { return true }
        guard Date() < deadline else { return false }
        usleep(10_000)
    }
}

/// The count of mounts on `path` in /proc/self/mountinfo (stacked mounts
/// count one each).
func mountCount(_ path: String) -> Int {
    guard let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return 0 }
    return mounts.split(separator: "\n").filter { $0.split(separator: " ")[4] == path }.count
}

/// A field of /proc/PID/status in kB (`VmRSS`), nil if unreadable.
func processStatus(_ pid: pid_t, _ field: String) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// The number of threads of process `pid` (/proc/PID/task).
func threadCount(_ pid: pid_t) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").count) ?? 0
}
