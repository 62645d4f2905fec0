/// The registers of a VT-d remapping unit that intel-iommu shows under
/// `/sys/devices/virtual/iommu/dmarN/intel-iommu/` (drivers/iommu/intel/
/// iommu.c: `address_show`, `cap_show`, `ecap_show`, `version_show`,
/// `domains_supported_show`), as the firmware's DMAR table and the unit's
/// MMIO registers give them.
public struct VTdRegisters: Sendable, Equatable {
    /// The register base (`iommu->reg_phys`, the DRHD's address).
    public var address: UInt64
    /// CAP_REG.
    public var capability: UInt64
    /// ECAP_REG.
    public var extendedCapability: UInt64
    /// VER_REG: major version in bits 7:4, minor in bits 3:0.
    public var version: UInt32

    public init(address: UInt64, capability: UInt64, extendedCapability: UInt64, version: UInt32) {
        self.address = address
        self.capability = capability
        self.extendedCapability = extendedCapability
        self.version = version
    }

    /// `cap_ndoms()`: the number of domain ids, 2^(4 + 2·ND).
    public var domainsSupported: UInt64 { 1 << (4 + 2 * (capability & 0x7)) }

    /// `cap_caching_mode()`: CAP.CM, bit 7 (the unit caches not-present
    /// entries: a virtual IOMMU such as QEMU's `caching-mode=on`).
    public var cachingMode: Bool { (capability >> 7) & 1 == 1 }

    /// `first_level_by_default()` (drivers/iommu/intel/iommu.c, 6.1 and
    /// 6.12 alike for a DMA domain): legacy mode has only second-level
    /// tables; in scalable mode (ECAP.SMTS, bit 43, and `intel_iommu_sm`)
    /// the only level there is, else first level (ECAP.FLTS bit 47, SLTS bit 46).
    public func firstLevelByDefault(scalableMode: Bool) -> Bool {
        let smts = (extendedCapability >> 43) & 1 == 1, flts = (extendedCapability >> 47) & 1 == 1
        let slts = (extendedCapability >> 46) & 1 == 1
        guard scalableMode && smts else { return false }
        return flts != slts ? flts : true
    }

    /// `intel_iommu_init()`: `if (cap_caching_mode(iommu->cap) &&
    /// !first_level_by_default(IOMMU_DOMAIN_DMA)) iommu_set_dma_strict();`
    /// (6.1 has it since 257ec2907419 "iommu/vt-d: Allow to use flush-queue
    /// when first level is default", in 6.1.16; 6.12 the same).
    public func forcesStrict(scalableMode: Bool) -> Bool {
        cachingMode && !firstLevelByDefault(scalableMode: scalableMode)
    }

    /// `version_show`: `DMAR_VER_MAJOR:DMAR_VER_MINOR`.
    public var versionText: String { "\((version & 0xf0) >> 4):\(version & 0x0f)" }
}
