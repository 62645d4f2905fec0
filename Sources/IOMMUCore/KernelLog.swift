/// The kernel log ring: lines as `dmesg` prints them, newest last.
///
/// Like the kernel's printk ring it has a clear cursor (`clear_seq`):
/// `readAndClear()` is `dmesg -c`, after which only newer lines are read.
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

    /// What `ring` protects.
    private struct Ring {
        var lines: [Line] = []
        var first = 0
        /// Lines appended since boot (the next line's sequence number).
        var appended = 0
        /// `clear_seq`: lines numbered below it are not read any more.
        var cleared = 0
    }

    public let capacity: Int
    private let ring = RankedMutex(.kernelLog, Ring())
    /// One state per ratelimited call site, as each `DEFINE_RATELIMIT_STATE`
    /// is its own static; a leaf lock, never held while appending.
    private let limiters = RankedMutex<[RatelimitedCall: RatelimitState]>(.ratelimits, [:])
    /// Time since boot: the timestamps and the rate limiter's `jiffies`.
    private let clock: @Sendable () -> Duration
    private let sink: (@Sendable (Line) -> Void)?

    /// - Parameters:
    ///   - clock: time since boot; by default a monotonic clock started now
    ///     (tests pass their own to step the rate limiter).
    ///   - sink: also receives every line (e.g. the daemon's stderr).
    public init(capacity: Int = 4096, clock: (@Sendable () -> Duration)? = nil,
                sink: (@Sendable (Line) -> Void)? = nil) {
        precondition(capacity > 0)
        self.capacity = capacity
        let boot = ContinuousClock.now
        self.clock = clock ?? { ContinuousClock.now - boot }
        self.sink = sink
    }

    /// Appends one line; the oldest is dropped when the ring is full.
    public func append(_ text: String) {
        let line = Line(timestamp: clock(), text: text)
        ring.withLock { r in
            if r.lines.count < capacity {
                r.lines.append(line)
            } else {
                r.lines[r.first] = line
                r.first = (r.first + 1) % capacity
            }
            r.appended += 1
        }
        sink?(line)
    }

    /// `pr_err_ratelimited` / `dev_err_ratelimited` at `call`: appends
    /// `text` unless the call site's limiter suppresses it, preceded by
    /// `"<function>: N callbacks suppressed"` when a new interval starts
    /// after suppressed calls (`___ratelimit`, lib/ratelimit.c).
    public func appendRatelimited(_ text: String, at call: RatelimitedCall) {
        let now = clock()
        let (allowed, suppressed) = limiters.withLock { states in
            states[call, default: RatelimitState()].admit(at: now)
        }
        if let suppressed { append("\(call.function): \(suppressed) callbacks suppressed") }
        if allowed { append(text) }
    }

    /// Every line not cleared that is still in the ring, oldest first.
    public var lines: [Line] { ring.withLock { readable($0) } }

    /// `dmesg -c` (`SYSLOG_ACTION_READ_CLEAR`): the unread lines, oldest
    /// first; later reads start after them.
    public func readAndClear() -> [Line] {
        ring.withLock { r in
            defer { r.cleared = r.appended }
            return readable(r)
        }
    }

    /// Just the texts, oldest first (what tests compare).
    public var texts: [String] { lines.map(\.text) }

    private func readable(_ r: Ring) -> [Line] {
        let ordered = r.lines[r.first...] + r.lines[..<r.first]
        // The ring holds the last `lines.count` of `appended` lines.
        let skip = max(0, r.cleared - (r.appended - r.lines.count))
        return Array(ordered.dropFirst(skip))
    }
}

/// A `pr_err_ratelimited` / `dev_err_ratelimited` call site of the kernel
/// that the model reproduces. Each has its own ratelimit state, and its
/// suppression notice names the enclosing function (`__func__`).
public enum RatelimitedCall: Sendable, Hashable {
    /// v6.1 `iommu_group_store_type`: "Cannot change default domain: Group
    /// has more than one device" (`pr_err_ratelimited`).
    case storeTypeGroupNotSingleton
    /// v6.1 `iommu_group_store_type`: "Device is still bound to driver".
    case storeTypeDeviceBound
    /// v6.1 `iommu_change_dev_def_domain`: its four `dev_err_ratelimited`s.
    case changeDefaultNotDefaultDomain, changeDefaultGroupNotSingleton, changeDefaultDeviceChanged, changeDefaultCannotBeIn
    /// v6.5+ `iommu_get_default_domain_type`: "Device is not trusted, but
    /// driver is overriding group %u to %s, refusing to probe."
    case untrustedOverride
    /// v6.5+ `iommu_get_def_domain_type`: "IOMMU driver error, requesting
    /// conflicting def_domain_type, ...".
    case conflictingWishes

    /// The function the call is in: the prefix of its suppression notice.
    public var function: String {
        switch self {
        case .storeTypeGroupNotSingleton, .storeTypeDeviceBound: "iommu_group_store_type"
        case .changeDefaultNotDefaultDomain, .changeDefaultGroupNotSingleton, .changeDefaultDeviceChanged, .changeDefaultCannotBeIn:
            "iommu_change_dev_def_domain"
        case .untrustedOverride: "iommu_get_default_domain_type"
        case .conflictingWishes: "iommu_get_def_domain_type"
        }
    }
}

/// `struct ratelimit_state` with the defaults of `DEFINE_RATELIMIT_STATE`
/// as the `*_ratelimited` printk macros use it: at most `burst` messages per
/// `interval` (`DEFAULT_RATELIMIT_INTERVAL` 5 s, `DEFAULT_RATELIMIT_BURST` 10).
public struct RatelimitState: Sendable, Equatable {
    public static let interval: Duration = .seconds(5)
    public static let burst = 10

    /// Start of the current interval; nil before the first call (`begin == 0`).
    var begin: Duration?
    var printed = 0
    var missed = 0

    public init() {}

    /// `___ratelimit(rs, func)` at time `now`: whether this call may print,
    /// and the number of calls suppressed in the interval that just ended
    /// (to be reported first) when `now` starts a new one.
    public mutating func admit(at now: Duration) -> (allowed: Bool, suppressed: Int?) {
        var suppressed: Int?
        let start = begin ?? now
        begin = start
        // time_is_before_jiffies(rs->begin + rs->interval): strictly after.
        if now > start + Self.interval {
            if missed > 0 { suppressed = missed }
            missed = 0
            begin = now
            printed = 0
        }
        if printed < Self.burst {
            printed += 1
            return (true, suppressed)
        }
        missed += 1
        return (false, suppressed)
    }
}
