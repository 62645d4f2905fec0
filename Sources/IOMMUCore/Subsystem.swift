import Synchronization
import SystemPackage

/// Global state of the IOMMU core that every group consults: the boot
/// default type (`iommu_def_domain_type`), the profile, the kernel log and
/// the fault injector. Immutable after boot apart from its own leaf locks.
public final class IOMMUSubsystem: Sendable {
    public let profile: KernelProfile
    public let log: KernelLog
    public let faults: FaultInjector
    public let events = EventBus()
    /// `iommu_def_domain_type` after IOMMU drivers initialised.
    public let defaultDomainType: DomainType
    private let nextDomainSerial = Atomic<UInt64>(1)
    /// Domain ids in use per unit (`domains_used`).
    let domainIDs: DomainIDUsage

    init(profile: KernelProfile, log: KernelLog, faults: FaultInjector, defaultDomainType: DomainType, units: [String]) {
        self.domainIDs = DomainIDUsage(units: units, identityHoldsID: profile.identityDomainHoldsDomainID)
        self.profile = profile
        self.log = log
        self.faults = faults
        self.defaultDomainType = defaultDomainType
    }

    /// Allocates a domain of `type` from `unit`'s driver, or fails with the
    /// driver's errno (or an injected one).
    func allocateDomain(_ type: DomainType, on unit: IOMMUUnit, at point: FaultPoint?) -> Result<Domain, Errno> {
        guard unit.abilities.canAllocate(type) else {
            return .failure(profile.returnsAllocatorErrno ? unit.abilities.unsupportedTypeErrno : .noDevice)
        }
        if let point, let errno = faults.fire(point) { return .failure(errno) }
        let serial = nextDomainSerial.wrappingAdd(1, ordering: .relaxed).oldValue
        return .success(Domain(serial: serial, type: type))
    }

    /// `iommu_dma_init_fq`: gives a DMA domain its flush queue.
    func initFlushQueue(_ domain: Domain) -> Errno? {
        if domain.hasFlushQueue { return nil }
        if let errno = faults.fire(.flushQueueInit) {
            log.append("iova flush queue initialization failed")
            return errno
        }
        domain.hasFlushQueue = true
        return nil
    }
}
