import Synchronization

/// The kernel log ring: lines as `dmesg` prints them, newest last.
public final class KernelLog: Sendable {
    public struct Line: Sendable, Equatable, CustomStringConvertible {
        /// Time since boot.
        public var timestamp: Duration
        public var text: String

        /// `[    1.234567] text`, as dmesg shows it.
        public var description: String {
            let (seconds, attoseconds) = timestamp.components
            let micros = attoseconds / 1_000_000_000_000
            let s = String(seconds)
            let us = String(micros)
            return "[" + String(repeating: " ", count: max(0, 5 - s.count)) + s + "."
                + String(repeating: "0", count: max(0, 6 - us.count)) + us + "] " + text
        }
    }

    private struct Ring {
        var lines: [Line] = []
        var first = 0
    }

    public let capacity: Int
    private let ring = Mutex(Ring())
    private let boot = ContinuousClock.now
    private let sink: (@Sendable (Line) -> Void)?

    /// - Parameter sink: also receives every line (e.g. the daemon's stderr).
    public init(capacity: Int = 4096, sink: (@Sendable (Line) -> Void)? = nil) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.sink = sink
    }

    /// Appends one line; the oldest is dropped when the ring is full.
    public func append(_ text: String) {
        let line = Line(timestamp: ContinuousClock.now - boot, text: text)
        ring.withLock { r in
            if r.lines.count < capacity {
                r.lines.append(line)
            } else {
                r.lines[r.first] = line
                r.first = (r.first + 1) % capacity
            }
        }
        sink?(line)
    }

    /// Every line still in the ring, oldest first.
    public var lines: [Line] {
        ring.withLock { r in Array(r.lines[r.first...] + r.lines[..<r.first]) }
    }

    /// Just the texts, oldest first (what tests compare).
    public var texts: [String] { lines.map(\.text) }
}
