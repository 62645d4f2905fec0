import Foundation
import Glibc
import Synchronization
import Testing

/// Bounds how long a test's call into a mount may take, so that a call that
/// never returns fails the test, naming the call, instead of hanging it.
///
/// A writer whose FUSE request the kernel never sees answered (a reply
/// carrying an errno of 512 or more is refused) sleeps in state D, where no
/// signal reaches it; only the end of the connection frees it. So a thread
/// looks at the call in progress every 50 ms. Once one has run longer than
/// its bound, it takes the server's state (`ctl dump`: the control socket
/// is not blocked by a stuck request) and kills the server; the kernel then
/// fails the outstanding requests with ENOTCONN and the call returns. The
/// caller picks the hang up with `takeHang()` and fails the test with it;
/// `MountedMachine.stop` unmounts what is left lazily.
///
/// The calls watched are this process's (`time`) or other processes' that
/// say when their current call started (`watching`, by the monotonic clock
/// all processes share).
final class SyscallWatchdog: Sendable {
    /// A call that had not returned when its bound ran out.
    struct Hang: Sendable {
        var call: String
        var bound: Duration
        /// `ctl dump` when the call was found stuck; nil if the server did
        /// not answer that within 10 s either.
        var dump: String?
        /// What the server printed on stderr until it was killed.
        var serverLog: String
    }

    /// The oldest call in progress: when it started (`monotonicNanoseconds`) and what it is.
    typealias CallInProgress = @Sendable () -> (started: UInt64, what: String)?

    private struct Watched {
        var bound: Duration
        var inProgress: CallInProgress
    }

    private struct State {
        var machine: MountedMachine
        var current: Watched?
        /// A stuck call was found: the server is being killed.
        var firing = false
        var hang: Hang?
        var overBound: [String] = []
        var stopped = false
    }

    /// The default bound of one call.
    let bound: Duration
    private let state: Mutex<State>
    private let finished = DispatchSemaphore(value: 0)

    init(_ machine: MountedMachine, bound: Duration) {
        self.bound = bound
        state = Mutex(State(machine: machine))
        Thread { [self] in watch() }.start()
    }

    /// Ends the watching thread (and waits for it).
    func stop() {
        state.withLock { $0.stopped = true }
        finished.wait()
    }

    /// Watches `machine` from now on (after a remount).
    func watch(_ machine: MountedMachine) {
        state.withLock { $0.machine = machine }
    }

    /// Runs `body`, a call into the mount described by `what`, under the
    /// bound (or `bound`); a call that took longer is listed in `overBound`.
    func time<T>(_ what: @autoclosure @escaping @Sendable () -> String, bound: Duration? = nil, _ body: () throws -> T) rethrows -> T {
        let started = monotonicNanoseconds(), limit = bound ?? self.bound
        state.withLock { $0.current = Watched(bound: limit, inProgress: { (started, what()) }) }
        defer {
            let elapsed = Duration.nanoseconds(Int64(monotonicNanoseconds() - started))
            state.withLock { s in
                s.current = nil
                // A hang is reported as such (`takeHang`).
                if elapsed > limit && !s.firing { s.overBound.append("\(what()) took \(elapsed)") }
            }
        }
        return try body()
    }

    /// Runs `body`, which waits for other processes, while watching the
    /// calls they make (`inProgress`) under the bound.
    func watching<T>(_ inProgress: @escaping CallInProgress, _ body: () async throws -> T) async rethrows -> T {
        state.withLock { $0.current = Watched(bound: bound, inProgress: inProgress) }
        defer { state.withLock { $0.current = nil } }
        return try await body()
    }

    /// The calls of this process that took longer than their bound but
    /// returned by themselves.
    var overBound: [String] { state.withLock { $0.overBound } }

    /// The hang found since the last call, if any; the server is dead then.
    /// (Waits while the server of a stuck call is being killed: the call
    /// returns as soon as it dies.)
    func takeHang() -> Hang? {
        while true {
            let (firing, hang) = state.withLock { s in
                defer { if s.hang != nil { (s.firing, s.hang) = (false, nil) } }
                return (s.firing, s.hang)
            }
            if hang != nil || !firing { return hang }
            usleep(10_000)
        }
    }

    private func watch() {
        defer { finished.signal() }
        while true {
            usleep(50_000)
            let (stopped, watched, machine) = state.withLock { s in (s.stopped, s.firing ? nil : s.current, s.machine) }
            if stopped { return }
            guard let watched, let call = watched.inProgress(),
                  Duration.nanoseconds(Int64(monotonicNanoseconds() &- call.started)) > watched.bound else { continue }
            state.withLock { $0.firing = true }

            let dump = Self.dump(of: machine)
            kill(machine.server.pid, SIGKILL)
            // Reaped at once: swift-testing's exit tests wait for any child
            // and go round a zombie they do not know forever.
            var status: Int32?
            for _ in 0..<1000 where machine.server.isRunning(exitStatus: &status) { usleep(10_000) }
            let hang = Hang(call: call.what, bound: watched.bound, dump: dump, serverLog: machine.serverLog)
            state.withLock { $0.hang = hang }
        }
    }

    /// `ctl dump` of `machine`, unless that too takes more than 10 s.
    private static func dump(of machine: MountedMachine) -> String? {
        let answer = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let result = machine.ctl("dump")
            answer.withLock { $0 = result.status == 0 ? result.stdout : nil }
            done.signal()
        }.start()
        return done.wait(timeout: .now() + 10) == .success ? answer.withLock { $0 } : nil
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

extension SyscallWatchdog.Hang {
    /// Fails the test with the hang and the server's state at the time.
    func record(sourceLocation: SourceLocation = #_sourceLocation) {
        let message = "\(call) did not return within \(bound); the server was killed to end it. Its stderr: \(serverLog.suffix(2000)). "
            + "State then: \(dump.map { String($0.prefix(20_000)) } ?? "(no answer to ctl dump)")"
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
}
