import Synchronization

/// The domain ids each IOMMU unit has in use, as VT-d counts them for
/// `intel-iommu/domains_used` (`domains_used_show`: the weight of
/// `iommu->domain_ids`). Ids 0 and FLPT_DEFAULT_DID are taken at init
/// (`iommu_init_domains`); a paging domain (DMA, DMA-FQ, unmanaged) takes
/// one more on a unit when the first group behind that unit attaches to it
/// and gives it back when the last one leaves (`domain_attach_iommu`,
/// `domain_detach_iommu`). Identity and blocking domains take none.
///
/// Kept as counters that the groups move as they change domains, so that
/// reading the file takes no lock.
final class DomainIDUsage: Sendable {
    /// One counter per unit, by name; the set of units is fixed at boot.
    private let counters: [String: Counter]

    private final class Counter: Sendable {
        let used = Atomic<Int>(2)
        /// Groups on the shared identity domain (`si_domain`), when it holds an id.
        let identityGroups = Atomic<Int>(0)
    }

    /// `KernelProfile.identityDomainHoldsDomainID`: every identity group
    /// shares one domain that holds one id on the unit.
    private let identityHoldsID: Bool

    init(units: [String], identityHoldsID: Bool = false) {
        counters = Dictionary(units.map { ($0, Counter()) }, uniquingKeysWith: { a, _ in a })
        self.identityHoldsID = identityHoldsID
    }

    /// The ids in use on the unit called `unit`.
    func used(on unit: String) -> Int { counters[unit]?.used.load(ordering: .relaxed) ?? 2 }

    /// A group behind `unit` moves from domain `old` to `new` (either may be
    /// nil); called with the group's mutex held.
    func move(on unit: String, from old: Domain?, to new: Domain?) {
        guard old !== new, let counter = counters[unit] else { return }
        if let new, new.type.takesDomainID, new.attachGroup(on: unit) {
            counter.used.add(1, ordering: .relaxed)
        }
        if let old, old.type.takesDomainID, old.detachGroup(on: unit) {
            counter.used.subtract(1, ordering: .relaxed)
        }
        guard identityHoldsID else { return }
        if new?.type == .identity, counter.identityGroups.add(1, ordering: .relaxed).newValue == 1 {
            counter.used.add(1, ordering: .relaxed)
        }
        if old?.type == .identity, counter.identityGroups.subtract(1, ordering: .relaxed).newValue == 0 {
            counter.used.subtract(1, ordering: .relaxed)
        }
    }
}

extension DomainType {
    /// Paging domains hold a domain id on each unit that uses them.
    var takesDomainID: Bool { self == .dma || self == .dmaFQ || self == .unmanaged }
}

extension IOMMUSubsystem {
    /// `intel-iommu/domains_used` of the unit called `unit`.
    public func domainsUsed(on unit: String) -> Int { domainIDs.used(on: unit) }
}

extension IOMMUGroup {
    /// `group->domain = new`, with the unit's domain ids following it.
    func setCurrentDomain(_ s: inout GroupState, _ new: Domain?) {
        if let unit = s.devices.first?.device.unit { subsystem.domainIDs.move(on: unit.name, from: s.domain, to: new) }
        s.domain = new
    }
}
