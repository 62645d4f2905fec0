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

    /// `version_show`: `DMAR_VER_MAJOR:DMAR_VER_MINOR`.
    public var versionText: String { "\((version & 0xf0) >> 4):\(version & 0x0f)" }
}
