import Glibc
import IOMMUCore

/// The events waiting to be sent to one `trace` client. The event bus
/// calls `push` on whichever thread made the change, possibly with a group
/// mutex held, so it only appends and pokes a pipe; the connection's thread
/// polls the pipe's read end beside the socket and sends what `take` gives.
final class EventStream: Sendable {
    private let queue = RankedMutex<[String]>(.eventStream, [])
    /// Readable while events wait (one byte per empty → non-empty change).
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

    /// Queues one event line; never blocks.
    func push(_ line: String) {
        let wasEmpty = queue.withLock { q in
            q.append(line)
            return q.count == 1
        }
        if wasEmpty {
            var byte: UInt8 = 1
            _ = write(writeEnd, &byte, 1)
        }
    }

    /// Every queued line, oldest first, and the pipe emptied. A push racing
    /// with this either lands in the lines taken or pokes the pipe again.
    func take() -> [String] {
        var sink = [UInt8](repeating: 0, count: 64)
        while read(readEnd, &sink, sink.count) > 0 {}
        return queue.withLock { q in
            defer { q.removeAll() }
            return q
        }
    }
}
