import Glibc
import IOMMUCore
import Synchronization

/// The events waiting to be sent to one `trace` client, at most `capacity`
/// of them. The event bus calls `push` on whichever thread made the change,
/// possibly with a group mutex held, so it only appends and pokes a pipe;
/// the connection's thread polls the pipe's read end beside the socket and
/// sends what `take` gives.
///
/// A client that reads too slowly (it stopped reading, or `iommufs ctl
/// trace | less` is paused) lets the queue fill up: the next event marks
/// the stream `overflowed` instead of growing it, and the session drops the
/// client. So a stalled client costs the daemon at most `capacity` events,
/// not one per change for as long as it stalls.
final class EventStream: Sendable {
    /// How many events may wait for one client. The client's socket buffer
    /// holds about as many again (some 200 KiB of event lines) before events
    /// start to wait here, so only a client that stopped reading for
    /// thousands of events is dropped, while a stalled one costs at most
    /// 2 × 4096 × `MemoryLayout<MachineEvent>.stride` (a few hundred KiB).
    static let capacity = 4096

    private struct Queue {
        var events: [MachineEvent] = []
        /// An event found the queue full (and was dropped).
        var overflowed = false
    }

    private let queue = RankedMutex(.eventStream, Queue())
    /// Readable while events wait (one byte per empty → non-empty change)
    /// and after the overflow.
    let readEnd: Int32
    private let writeEnd: Int32

    /// nil if no pipe could be made (out of descriptors).
    init?() {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return nil }
        for fd in ends {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }

    /// Queues one event, or marks the stream overflowed if `capacity` wait
    /// already; never blocks.
    func push(_ event: MachineEvent) {
        let poke = queue.withLock { q in
            guard !q.overflowed else { return false }
            guard q.events.count < Self.capacity else {
                q.overflowed = true
                return true
            }
            q.events.append(event)
            return q.events.count == 1
        }
        if poke {
            var byte: UInt8 = 1
            _ = write(writeEnd, &byte, 1)
        }
    }

    /// True once an event found the queue full: the client must be dropped.
    var overflowed: Bool { queue.withLock { $0.overflowed } }

    /// Every queued event, oldest first, and the pipe emptied. A push racing
    /// with this either lands in the events taken or pokes the pipe again.
    func take() -> [MachineEvent] {
        clearWakeup()
        return queue.withLock { q in
            defer { q.events = [] }
            return q.events
        }
    }

    /// Empties the pipe without taking events, for a session that cannot
    /// send for now: pushes to a non-empty queue do not poke it again, so
    /// it stays quiet until the overflow.
    func clearWakeup() {
        var sink = [UInt8](repeating: 0, count: 64)
        while read(readEnd, &sink, sink.count) > 0 {}
    }
}
