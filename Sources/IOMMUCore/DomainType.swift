/// `IOMMU_DOMAIN_*`, with the kernel's numeric values (they appear in log
/// lines such as the default-domain fallback warning).
public enum DomainType: UInt32, Sendable, CaseIterable {
    case blocked = 0
    case unmanaged = 1
    case dma = 3
    case identity = 4
    case dmaFQ = 11

    /// What `type` shows (`iommu_group_show_type`), without the newline.
    public var sysfsName: String {
        switch self {
        case .blocked: "blocked"
        case .unmanaged: "unmanaged"
        case .dma: "DMA"
        case .identity: "identity"
        case .dmaFQ: "DMA-FQ"
        }
    }

    /// `iommu_domain_type_str`, used in log lines.
    public var logName: String {
        switch self {
        case .blocked: "Blocked"
        case .identity: "Passthrough"
        case .unmanaged: "Unmanaged"
        case .dma, .dmaFQ: "Translated"
        }
    }

    /// `iommu_is_dma_domain`: a domain the DMA API translates through.
    public var isDMA: Bool { self == .dma || self == .dmaFQ }

    /// `__IOMMU_DOMAIN_PAGING`: a domain with page tables (direct regions
    /// must be mapped into it).
    public var isPaging: Bool { self == .dma || self == .dmaFQ || self == .unmanaged }

    /// Parses a DomainType from its sysfs name (topology files use these).
    public init?(sysfsName: String) {
        guard let t = Self.allCases.first(where: { $0.sysfsName == sysfsName }) else { return nil }
        self = t
    }
}
