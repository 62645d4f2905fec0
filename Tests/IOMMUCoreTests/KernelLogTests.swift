import IOMMUCore
import Synchronization
import Testing

/// The kernel log: the clear cursor of `dmesg -c` and the rate limiter of
/// the `*_ratelimited` printk calls (lib/ratelimit.c `___ratelimit`), driven
/// by a clock the test steps.
@Suite("kernel log: dmesg -c and ratelimited calls")
struct KernelLogTests {
    /// Time since boot that only moves when the test says so.
    final class ManualClock: Sendable {
        private let now = Mutex(Duration.seconds(1))
        func advance(_ d: Duration) { now.withLock { $0 += d } }
        var read: @Sendable () -> Duration { { [self] in now.withLock { $0 } } }
    }

    @Test("___ratelimit: 10 per interval; the interval ends strictly after 5 s and reports what it suppressed")
    func limiter() {
        var state = RatelimitState()
        let start = Duration.seconds(100)
        let admitted = (0..<13).map { state.admit(at: start + .milliseconds($0)).allowed }
        #expect(admitted == Array(repeating: true, count: 10) + [false, false, false])
        // begin + interval itself is still inside (time_is_before_jiffies is strict).
        #expect(state.admit(at: start + .seconds(5)) == (false, nil))
        let next = state.admit(at: start + .seconds(5) + .nanoseconds(1))
        #expect(next.allowed && next.suppressed == 4)
        // A new interval with nothing suppressed says nothing.
        for i in 1...3 { _ = state.admit(at: start + .seconds(6) + .milliseconds(i)) }
        #expect(state.admit(at: start + .seconds(20)) == (true, nil))
    }

    @Test("appendRatelimited: each call site has its own state; the notice names the function")
    func callSites() {
        let clock = ManualClock()
        let log = KernelLog(clock: clock.read)
        for _ in 0..<12 { log.appendRatelimited("iommu: Device is still bound to driver", at: .storeTypeDeviceBound) }
        log.appendRatelimited("iommu: Cannot change default domain: Group has more than one device", at: .storeTypeGroupNotSingleton)
        #expect(log.texts == Array(repeating: "iommu: Device is still bound to driver", count: 10)
            + ["iommu: Cannot change default domain: Group has more than one device"])
        clock.advance(.seconds(6))
        _ = log.readAndClear()
        log.appendRatelimited("iommu: Device is still bound to driver", at: .storeTypeDeviceBound)
        #expect(log.readAndClear().map(\.text) == ["iommu_group_store_type: 2 callbacks suppressed", "iommu: Device is still bound to driver"])
    }

    @Test("linux-6.1 type store: the 11th refused write within 5 s logs nothing, the next interval reports it")
    func storeTypeIsRatelimited() throws {
        let clock = ManualClock()
        let machine = try Machine(spec: .test(Section14.rootBus + [Section14.targetDevice(driver: "e1000e")]),
                                  profile: .linux6_1, log: KernelLog(clock: clock.read))
        let group = try Section14.group5(machine)
        _ = machine.log.readAndClear()
        for _ in 0..<11 { #expect(group.write("identity") == .failure(.resourceBusy)) }
        #expect(machine.log.readAndClear().map(\.text) == Array(repeating: Profile61Tests.stillBound, count: 10))
        clock.advance(.seconds(5) + .milliseconds(1))
        #expect(group.write("identity") == .failure(.resourceBusy))
        #expect(machine.log.readAndClear().map(\.text) == ["iommu_group_store_type: 1 callbacks suppressed", Profile61Tests.stillBound])
    }

    @Test("readAndClear returns each line once, also after the ring wrapped")
    func clearCursor() {
        let log = KernelLog(capacity: 3)
        log.append("a")
        #expect(log.readAndClear().map(\.text) == ["a"])
        #expect(log.readAndClear().isEmpty)
        for text in ["b", "c", "d", "e"] { log.append(text) }
        // "b" fell out of the ring; the rest is unread.
        #expect(log.readAndClear().map(\.text) == ["c", "d", "e"])
        log.append("f")
        #expect(log.lines.map(\.text) == ["f"])
        #expect(log.readAndClear().map(\.text) == ["f"])
    }
}
