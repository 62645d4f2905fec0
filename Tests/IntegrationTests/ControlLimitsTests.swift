import Control
import Foundation
import Glibc
import Synchronization
import Testing

/// What the control socket holds for clients that misbehave: trace clients
/// that stop reading, more connections than it serves. Both once made the
/// daemon grow without bound (memory for every event queued to a stalled
/// trace; a thread per connection).
@Suite("Control socket limits") struct ControlLimitsTests {
    /// Type writes of group 4, two events each (domain-attached,
    /// type-changed): ten times what a stalled trace client may have
    /// waiting (`EventStream.capacity`, 4096) and its socket buffer hold.
    static let writes = 20_000
    /// The daemon's RSS may grow this much (kB) while stalled clients are
    /// connected: the allocator's slack and libfuse's worker stacks; the
    /// queues themselves take at most 10 × 4096 events (~2 MiB). Without the
    /// bound, 20,000 writes grew it by some 40 MiB.
    static let rssGrowthLimit = 16 * 1024

    @Test("trace clients that stop reading are dropped with a notice, the daemon's memory stays bounded, and a client that reads sees every event")
    func stalledTraceClients() throws {
        try MountedMachine.with { m in
            let type = SysfsPCI(m).type(4)
            let toggle = { (i: Int) in Syscall.write(type, i % 2 == 0 ? "identity" : "DMA-FQ") == .ok(i % 2 == 0 ? 8 : 6) }
            // Warm up what every write reuses (libfuse's workers, the kernel log ring).
            #expect((0..<2000).allSatisfy(toggle))
            let before = try #require(processStatus(m.server.pid, "VmRSS"))
            var stalled: [ControlConnection] = []
            for _ in 0..<9 {
                var connection = try ControlConnection(path: m.controlSocket, timeout: 5)
                #expect(connection.send(#"{"verb":"trace"}"#) && connection.readText() == #"{"ok":true}"#)
                stalled.append(connection)
            }
            let paused = try PausedTrace(m)
            let reader = try TraceReader(m, count: 2 * Self.writes)
            for i in 0..<Self.writes {
                #expect(toggle(i), "write \(i)")
                // The reader is never more than 1000 events behind: it keeps up.
                guard reader.waitUntilBehindAtMost(1000, of: 2 * (i + 1)) else {
                    Issue.record("the reading trace client got stuck at \(reader.seen) of \(2 * (i + 1)) events")
                    break
                }
            }
            let during = try #require(processStatus(m.server.pid, "VmRSS"))
            #expect(during - before < Self.rssGrowthLimit, "VmRSS \(before) kB → \(during) kB with 10 stalled trace clients")
            #expect(reader.finish() == 2 * Self.writes)
            for var connection in stalled {
                var events = 0
                var last: String?
                while let line = connection.readText() {
                    if line.hasPrefix(#"{"event":"#) { events += 1 } else { last = line }
                }
                connection.close()
                #expect(events > 0)
                #expect(last == #"{"ok":false,"errno":"ENOBUFS","message":"trace dropped: the client read too slowly: 4096 events were waiting"}"#)
            }
            let (status, errors) = paused.resume()
            #expect(status == 1)
            #expect(errors.hasSuffix("iommufs: ENOBUFS: trace dropped: the client read too slowly: 4096 events were waiting\n"), "\(errors)")
            let after = try #require(processStatus(m.server.pid, "VmRSS"))
            #expect(after - before < Self.rssGrowthLimit, "VmRSS \(before) kB → \(after) kB after the stalled clients left")
            #expect(m.serverLog.components(separatedBy: "dropped the trace of pid").count - 1 == 10, "\(m.serverLog)")
        }
    }

    @Test("connections beyond the limit are refused with a message that ctl prints; the daemon's threads stay bounded and it serves afterwards")
    func connectionLimit() throws {
        try MountedMachine.with { m in
            let limit = ControlServer.maximumConnections
            let threadsBefore = threadCount(m.server.pid)
            let served = try (0..<limit).map { _ in try ControlConnection(path: m.controlSocket) }
            let refusal = #"{"ok":false,"errno":"EAGAIN","message":"the server already serves \#(limit) control connections, its limit; "#
                + #"try again once one of them has closed"}"#
            for _ in 0..<(3 * limit) {
                // Refused at once, before any request: the reply, then the end.
                var beyond = try ControlConnection(path: m.controlSocket, timeout: 5)
                defer { beyond.close() }
                let reply = beyond.readText()
                #expect(reply == refusal)
                #expect(beyond.readLine() == nil)
                if reply != refusal { break }
            }
            #expect(threadCount(m.server.pid) - threadsBefore <= limit, "\(threadsBefore) threads → \(threadCount(m.server.pid))")
            let refused = m.ctl("dmesg")
            #expect(refused.status == 1)
            #expect(refused.stderr == "iommufs: EAGAIN: the server already serves \(limit) control connections, its limit; "
                    + "try again once one of them has closed\n")
            served.forEach { $0.close() }
            // Their sessions see the hang-up and end.
            let deadline = Date().addingTimeInterval(10)
            while threadCount(m.server.pid) > threadsBefore, Date() < deadline { usleep(10_000) }
            #expect(threadCount(m.server.pid) <= threadsBefore)
            #expect(try m.ctlOK("dmesg").contains("Adding to iommu group"))
            #expect(m.serverLog.contains("refused a control connection: \(limit) are open, the limit"), "\(m.serverLog)")
        }
    }
}

/// A trace client of `count` events that reads every event on a thread of
/// its own, counting them, so that the writer can wait for it.
private struct TraceReader {
    private final class Progress: Sendable {
        let seen = Atomic<Int>(0)
        let ended = Atomic<Bool>(false)
    }

    private let progress = Progress()

    init(_ m: MountedMachine, count: Int) throws {
        var connection = try ControlConnection(path: m.controlSocket)
        try #require(connection.send(#"{"verb":"trace","count":\#(count)}"#) && connection.readText() == #"{"ok":true}"#)
        let progress = progress
        Thread { [connection] in
            var connection = connection
            while let line = connection.readText(), line.hasPrefix(#"{"event":"#) { progress.seen.add(1, ordering: .relaxed) }
            connection.close()
            progress.ended.store(true, ordering: .releasing)
        }.start()
    }

    var seen: Int { progress.seen.load(ordering: .relaxed) }

    /// Waits (up to 20 s) until at most `lag` of `total` events are unseen.
    func waitUntilBehindAtMost(_ lag: Int, of total: Int) -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while total - seen > lag {
            guard Date() < deadline, !progress.ended.load(ordering: .acquiring) else { return false }
            usleep(100)
        }
        return true
    }

    /// Waits (up to 20 s) for the server to end the stream; the events seen.
    func finish() -> Int {
        let deadline = Date().addingTimeInterval(20)
        while !progress.ended.load(ordering: .acquiring), Date() < deadline { usleep(1000) }
        return seen
    }
}

/// `iommufs ctl trace` with its stdout a pipe that nobody reads until
/// `resume` (`iommufs ctl trace | less`, paused): once the pipe is full the
/// client stops reading its socket.
private struct PausedTrace {
    let process: Subprocess
    let output = CapturePipe()
    let errors: String

    init(_ m: MountedMachine) throws {
        errors = m.root + ".trace-errors"
        let file = open(errors, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        defer { close(file) }
        process = try Subprocess.spawn(MountedMachine.binary, ["ctl", "--mount", m.root, "trace"], stdout: output.writeEnd, stderr: file)
        // Its first line on stderr comes once the server has subscribed.
        let deadline = Date().addingTimeInterval(20)
        while !text.hasPrefix("iommufs: tracing"), Date() < deadline { usleep(10_000) }
        try #require(text.hasPrefix("iommufs: tracing"), "\(text)")
    }

    private var text: String { (try? String(contentsOfFile: errors, encoding: .utf8)) ?? "" }

    /// Reads what it printed until it exits (bounded: the stream has an end
    /// now, the server dropped it); its status and stderr.
    func resume() -> (Int32, String) {
        let reading = Thread { _ = output.drain() }
        reading.start()
        let status = process.wait(seconds: 20) ?? {
            kill(process.pid, SIGKILL)
            return -1
        }()
        defer { unlink(errors) }
        return (status, text)
    }
}
