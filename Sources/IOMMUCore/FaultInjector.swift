import Glibc
import Synchronization
import SystemPackage

/// Where a failure or a stall can be injected into the core's logic. Each
/// point sits where its kernel counterpart runs, under the same locks.
public enum FaultPoint: String, Sendable, CaseIterable {
    /// Allocating a default (paging or identity) domain.
    case domainAlloc = "domain-alloc"
    /// Attaching a device to a domain (`attach_dev`).
    case attach
    /// `iommu_dma_init_fq`: setting up a flush queue.
    case flushQueueInit = "fq-init"
    /// Allocating the group's blocking domain (DMA ownership claims).
    case blockingDomainAlloc = "blocking-domain-alloc"
    /// `pci_dev_reset_iommu_prepare`, under the device lock and the group's
    /// mutex: a failure fails the reset.
    case resetPrepare = "reset-prepare"
    /// `pci_dev_reset_iommu_done`, under the same locks. It returns nothing
    /// in the kernel: this point only stalls.
    case resetDone = "reset-done"
    /// `iommu_deferred_attach` under the group's mutex, before the attach.
    case deferredAttach = "deferred-attach"
    /// A driver's own probe (`call_driver_probe`), under the device lock,
    /// after `pci_dma_configure` took its group reference.
    case probe

    /// Whether a failure can be armed here (not only a stall).
    public var canFail: Bool { self != .resetDone }
}

/// Failures and stalls armed at fault points: once, N times or always,
/// each time with a probability; a shot is consumed only when it fires.
public final class FaultInjector: Sendable {
    /// What an armed fault does where it fires.
    public enum Effect: Sendable, Equatable {
        /// The operation fails with this errno.
        case fail(Errno)
        /// The operation holds every lock it holds there for this long,
        /// then goes on: a window for a concurrent request.
        case stall(Duration)
    }

    public struct Fault: Sendable, Equatable {
        public var effect: Effect
        /// How many more times it fires; nil = every time.
        public var remaining: Int?
        /// The chance that it fires when reached (1 = always).
        public var probability: Double
        /// How many operations reaching the point go through before it
        /// fires: 1 fails the second member's attach of a group, say.
        public var skip: Int

        public init(_ effect: Effect, remaining: Int? = 1, probability: Double = 1, skip: Int = 0) {
            self.effect = effect
            self.remaining = remaining
            self.probability = probability
            self.skip = skip
        }

        public init(errno: Errno, remaining: Int? = 1, probability: Double = 1) {
            self.init(.fail(errno), remaining: remaining, probability: probability)
        }
    }

    /// Why `arm` refused a fault.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// A kernel-internal errno where the kernel would hand it to user
        /// space: no FUSE reply could carry it.
        case internalErrno(Errno, FaultPoint)
        /// A failure at a point whose kernel function cannot fail.
        case cannotFail(FaultPoint)
        /// A stall longer than `maximumStall` (or not positive).
        case stallOutOfRange(Duration)

        public var description: String {
            switch self {
            case .internalErrno(let errno, let point):
                "errno \(errno.rawValue) is internal to the kernel: no \(point.rawValue) failure reaches user space with it, "
                    + "and a FUSE reply cannot carry it"
            case .cannotFail(let point): "\(point.rawValue) cannot fail (its kernel function returns nothing); it can only stall"
            case .stallOutOfRange(let duration): "a stall lasts more than 0 and at most \(FaultInjector.maximumStall), not \(duration)"
            }
        }
    }

    /// The longest stall: long enough to place any request inside it, short
    /// enough that a stall cannot turn into a hang of the file system.
    public static let maximumStall = Duration.seconds(60)

    private let armed = RankedMutex<[FaultPoint: Fault]>(.faults, [:])

    public init() {}

    /// Arms `fault` at `point`, replacing what was armed there. Refused: a
    /// kernel-internal errno (`Errno.isKernelInternal`), except the
    /// EPROBE_DEFER of a driver's probe, which the driver core maps (what
    /// fails elsewhere reaches the writer unchanged, and no reply of the
    /// mount could carry it); a failure at `reset-done`; a stall outside
    /// 0…`maximumStall`.
    public func arm(_ point: FaultPoint, _ fault: Fault) throws(Refusal) {
        switch fault.effect {
        case .fail(let errno):
            guard point.canFail else { throw .cannotFail(point) }
            if errno.isKernelInternal && !(point == .probe && errno == probeDeferErrno) { throw .internalErrno(errno, point) }
        case .stall(let duration):
            guard duration > .zero && duration <= Self.maximumStall else { throw .stallOutOfRange(duration) }
        }
        armed.withLock { $0[point] = fault }
    }

    public func disarm(_ point: FaultPoint) {
        _ = armed.withLock { $0.removeValue(forKey: point) }
    }

    /// What is armed now, by point (in `FaultPoint.allCases` order).
    public var armedFaults: [(point: FaultPoint, fault: Fault)] {
        let faults = armed.withLock { $0 }
        return FaultPoint.allCases.compactMap { point in faults[point].map { (point, $0) } }
    }

    /// The errno to fail with at `point` now, if a failure is armed there.
    /// A stall armed there sleeps here, on the caller's thread and with the
    /// caller's locks held, and then lets the operation go on.
    func fire(_ point: FaultPoint) -> Errno? {
        let effect = armed.withLock { faults -> Effect? in
            guard var fault = faults[point] else { return nil }
            if fault.skip > 0 {
                fault.skip -= 1
                faults[point] = fault
                return nil
            }
            if fault.probability < 1 && Double.random(in: 0..<1) >= fault.probability { return nil }
            if let n = fault.remaining {
                fault.remaining = n - 1
                faults[point] = n > 1 ? fault : nil
            }
            return fault.effect
        }
        switch effect {
        case .fail(let errno): return errno
        case .stall(let duration):
            sleep(for: duration)
            return nil
        case nil: return nil
        }
    }
}

/// Sleeps for `duration` (nanosleep, resumed after a signal).
func sleep(for duration: Duration) {
    let (seconds, attoseconds) = duration.components
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 { request = remaining }
}
