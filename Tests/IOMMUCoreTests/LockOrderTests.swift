import IOMMUCore
import Testing

// The debug-build checks of `RankedMutex`, the port of lockdep: the order
// of `LockClass`, nesting by key, a lock taken twice, `assertHeld`. Release
// builds compile the checks out, and these tests with them. A violation
// traps, so each one runs in a child process (an exit test) whose stderr
// must name both locks.
#if DEBUG
@Suite("Lock order")
struct LockOrderTests {
    @Test("the documented order, nested device locks by address and populations by depth pass")
    func inOrder() {
        let openFile = RankedMutex(.openFile, 1)
        let rescanRemove = RankedMutex(.rescanRemove, 2)
        let vfio = RankedMutex(.vfio, 3)
        let low = RankedMutex(.device, key: 0x0100, 4)
        let high = RankedMutex(.device, key: 0x0200, 5)
        let parent = RankedMutex(.population, key: 1, 6)
        let child = RankedMutex(.population, key: 2, 7)
        let group = RankedMutex(.group, 8)
        let registry = RankedMutex(.registry, 9)
        let leaf = RankedMutex(.kernelLog, 10)
        let sum = openFile.withLock { a in
            rescanRemove.withLock { b in
                vfio.withLock { c in
                    low.withLock { d in
                        high.withLock { e in
                            parent.withLock { f in
                                child.withLock { g in
                                    group.withLock { h in
                                        registry.withLock { i in
                                            leaf.withLock { j in
                                                leaf.assertHeld()
                                                group.assertHeld()
                                                return a + b + c + d + e + f + g + h + i + j
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        #expect(sum == 55)
        // Released: the same locks in the same order again, and a leaf alone.
        #expect(group.withLock { g in leaf.withLock { g + $0 } } == 18)
    }

    /// What the child process printed on stderr: the trap's message.
    static func stderr(_ result: ExitTest.Result?) -> String {
        String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    }

    @Test("a device lock taken under a group mutex traps, naming both")
    func deviceUnderGroup() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let group = RankedMutex(.group, ())
            let device = RankedMutex(.device, key: 1, ())
            group.withLock { _ in device.withLock { _ in } }
        }
        let text = Self.stderr(result)
        #expect(text.contains("lock order: Device.lock (key 1) taken while holding IOMMUGroup.state"), "\(text)")
    }

    @Test("a leaf lock taken under another leaf traps")
    func leafUnderLeaf() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let log = RankedMutex(.kernelLog, ())
            let faults = RankedMutex(.faults, ())
            log.withLock { _ in faults.withLock { _ in } }
        }
        let text = Self.stderr(result)
        #expect(text.contains("FaultInjector.armed taken while holding KernelLog.ring"), "\(text)")
    }

    @Test("device locks nested against address order trap")
    func devicesOutOfOrder() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let low = RankedMutex(.device, key: 0x0100, ())
            let high = RankedMutex(.device, key: 0x0200, ())
            high.withLock { _ in low.withLock { _ in } }
        }
        let text = Self.stderr(result)
        #expect(text.contains("Device.lock (key 256) taken while holding Device.lock (key 512)"), "\(text)")
    }

    @Test("a lock taken twice by one thread traps instead of deadlocking")
    func recursion() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let registry = RankedMutex(.registry, ())
            registry.withLock { _ in registry.withLock { _ in } }
        }
        let text = Self.stderr(result)
        #expect(text.contains("lock order: Machine.registry taken again"), "\(text)")
    }

    @Test("assertHeld traps unless the calling thread holds the lock")
    func assertHeld() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let group = RankedMutex(.group, ())
            let registry = RankedMutex(.registry, ())
            registry.withLock { _ in group.assertHeld() }
        }
        let text = Self.stderr(result)
        #expect(text.contains("IOMMUGroup.state is not held; held: Machine.registry"), "\(text)")
    }
}
#endif
