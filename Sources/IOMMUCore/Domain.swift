/// An `iommu_domain`: the translation a device is attached to.
///
/// A reference type because the kernel's logic is about domain identity
/// ("is the group's domain its default domain?"). Every mutable field is
/// changed only under the mutex of the group that uses the domain.
public final class Domain: @unchecked Sendable {
    /// Allocation order, for logs and dumps.
    public let serial: UInt64
    /// Retagged in place by the live DMA → DMA-FQ switch and by the
    /// DMA-FQ → DMA downgrade of `iommu_dma_init_domain`.
    public internal(set) var type: DomainType
    /// True once `iommu_dma_init_fq` succeeded (the cookie has a flush queue).
    var hasFlushQueue = false
    /// True once `iommu_dma_init_domain` ran for the domain: later devices
    /// (and later type writes reusing the domain) find it initialised and
    /// skip the DMA-FQ → DMA downgrade check.
    var isDMAInitialised = false

    /// Groups attached to the domain, per unit name (a VFIO container's
    /// domain serves groups of several units): a leaf lock, taken under
    /// whichever group mutex changes an attachment.
    private let groupsByUnit = RankedMutex(.domainUnits, UnitAttachments())

    init(serial: UInt64, type: DomainType) {
        self.serial = serial
        self.type = type
    }

    /// Counts a group behind `unit` attaching; true if it is the first there.
    func attachGroup(on unit: String) -> Bool {
        groupsByUnit.withLock { $0.add(1, on: unit) == 1 }
    }

    /// Counts a group behind `unit` leaving; true if it was the last there.
    func detachGroup(on unit: String) -> Bool {
        groupsByUnit.withLock { $0.add(-1, on: unit) <= 0 }
    }
}

/// Attached groups per unit. Nearly every domain serves one unit, so that
/// one is counted inline: a type write allocates a domain, and a big
/// machine has 50,000 of them; other units (a VFIO container's) go to a
/// dictionary that stays empty, and unallocated, otherwise.
private struct UnitAttachments {
    private var first: (unit: String, count: Int)?
    private var others: [String: Int] = [:]

    /// Adds `delta` to `unit`'s count and returns the new count; a unit at
    /// zero is forgotten.
    mutating func add(_ delta: Int, on unit: String) -> Int {
        if others[unit] == nil, first == nil || first?.unit == unit {
            let count = (first?.count ?? 0) + delta
            first = count > 0 ? (unit, count) : nil
            return count
        }
        let count = others[unit, default: 0] + delta
        others[unit] = count > 0 ? count : nil
        return count
    }
}
