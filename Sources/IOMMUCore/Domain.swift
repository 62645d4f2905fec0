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

    init(serial: UInt64, type: DomainType) {
        self.serial = serial
        self.type = type
    }
}
