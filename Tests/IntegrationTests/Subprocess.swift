import Glibc

/// Child processes started with posix_spawn and close-on-exec pipes.
///
/// Foundation's `Process` lets children inherit every open descriptor. With
/// tests running in parallel, a server started by one test would inherit
/// the write end of another test's output pipe and keep it open, and that
/// test's read would never see EOF. Here every pipe is `O_CLOEXEC`, so a
/// child holds only its own stdin/stdout/stderr.
struct Subprocess {
    let pid: pid_t

    struct SpawnError: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts `executable` with stdout and stderr going to the given
    /// descriptors (nil: /dev/null).
    static func spawn(_ executable: String, _ arguments: [String],
                      stdout: Int32? = nil, stderr: Int32? = nil) throws -> Subprocess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        for (fd, target) in [(stdout, Int32(1)), (stderr, Int32(2))] {
            if let fd { posix_spawn_file_actions_adddup2(&actions, fd, target) }
            else { posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0) }
        }
        // Test threads run with signals blocked; a child must start with an
        // empty mask and default handlers, as from a shell.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else { throw SpawnError(description: "\(executable): \(String(cString: strerror(result)))") }
        return Subprocess(pid: pid)
    }

    /// Waits for the child and returns its exit status (128+N for signal N).
    @discardableResult
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// True while the child has not exited (it is reaped if it has).
    func isRunning(exitStatus: inout Int32?) -> Bool {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            let signal = status & 0x7f
            exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
            return false
        }
        return r == 0
    }
}

/// pipe2(2); Glibc's module map does not export it (it needs _GNU_SOURCE).
@_silgen_name("pipe2")
private func pipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32

/// A close-on-exec pipe whose read end collects everything written to it.
struct CapturePipe {
    let readEnd: Int32
    let writeEnd: Int32

    init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe2(&fds, O_CLOEXEC) == 0, "pipe2 failed")
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    /// Closes our copy of the write end and reads to EOF.
    func drain() -> String {
        close(writeEnd)
        defer { close(readEnd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(readEnd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }
}
