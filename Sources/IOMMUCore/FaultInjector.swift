import SystemPackage

/// Where a failure can be injected into the core's logic.
public enum FaultPoint: String, Sendable, CaseIterable {
    /// Allocating a default (paging or identity) domain.
    case domainAlloc = "domain-alloc"
    /// Attaching a device to a domain (`attach_dev`).
    case attach
    /// `iommu_dma_init_fq`: setting up a flush queue.
    case flushQueueInit = "fq-init"
    /// Allocating the group's blocking domain (DMA ownership claims).
    case blockingDomainAlloc = "blocking-domain-alloc"
}

/// Failures armed at fault points: once, N times or always, each time with
/// a probability; a shot is consumed only when the fault fires.
public final class FaultInjector: Sendable {
    public struct Fault: Sendable, Equatable {
        public var errno: Errno
        /// How many more times it fires; nil = every time.
        public var remaining: Int?
        /// The chance that it fires when reached (1 = always).
        public var probability: Double

        public init(errno: Errno, remaining: Int? = 1, probability: Double = 1) {
            self.errno = errno
            self.remaining = remaining
            self.probability = probability
        }
    }

    private let armed = RankedMutex<[FaultPoint: Fault]>(.faults, [:])

    public init() {}

    public func arm(_ point: FaultPoint, _ fault: Fault) {
        armed.withLock { $0[point] = fault }
    }

    public func disarm(_ point: FaultPoint) {
        _ = armed.withLock { $0.removeValue(forKey: point) }
    }

    /// The errno to fail with at `point` now, if a fault is armed there.
    func fire(_ point: FaultPoint) -> Errno? {
        armed.withLock { faults in
            guard var fault = faults[point] else { return nil }
            if fault.probability < 1 && Double.random(in: 0..<1) >= fault.probability { return nil }
            if let n = fault.remaining {
                fault.remaining = n - 1
                faults[point] = n > 1 ? fault : nil
            }
            return fault.errno
        }
    }
}
