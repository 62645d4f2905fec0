import SystemPackage

/// What an IOMMU hardware driver (intel-iommu, amd-iommu, ...) can do, as
/// far as the core's logic can tell.
public struct IOMMUDriverAbilities: Sendable, Equatable {
    /// The family decides unit names and sysfs placement (§1 of the
    /// behaviour reference): Intel units are class devices without a parent
    /// (`/sys/devices/virtual/iommu/dmarN`), AMD units sit under the IOMMU's
    /// own PCI function.
    public enum Family: String, Sendable, CaseIterable {
        case intel, amd
    }

    public var family: Family
    /// Default-domain types the driver can allocate. DMA-FQ is a DMA domain
    /// with a flush queue, so it needs `.dma`.
    public var domainTypes: Set<DomainType>
    /// `IOMMU_CAP_DEFERRED_FLUSH`: without it a DMA-FQ domain is downgraded
    /// to DMA when DMA ops are set up.
    public var deferredFlush: Bool
    /// The errno an allocation of an unsupported type returns (v6.7+: the
    /// allocator's own; ENOMEM for a legacy `domain_alloc` returning NULL,
    /// EOPNOTSUPP when there is no suitable op).
    public var unsupportedTypeErrno: Errno
    /// The driver forces strict invalidation at init (VT-d with caching mode
    /// under virtualization): the global default DMA-FQ becomes DMA. nil:
    /// as the unit's registers decide it (`IOMMUUnit.forcesStrict(boot:)`).
    public var forcesStrict: Bool?

    public init(family: Family,
                domainTypes: Set<DomainType> = [.blocked, .identity, .dma, .unmanaged],
                deferredFlush: Bool = true,
                unsupportedTypeErrno: Errno = .noMemory,
                forcesStrict: Bool? = nil) {
        self.family = family
        self.domainTypes = domainTypes
        self.deferredFlush = deferredFlush
        self.unsupportedTypeErrno = unsupportedTypeErrno
        self.forcesStrict = forcesStrict
    }

    /// Whether a domain of `type` can be allocated.
    func canAllocate(_ type: DomainType) -> Bool {
        domainTypes.contains(type == .dmaFQ ? .dma : type)
    }

    /// What the driver prints when it forces strict invalidation: VT-d once
    /// (`pr_info_once` in intel_iommu_init), AMD once per unit
    /// (`iommu_init_pci`, when the unit caches non-present entries).
    func forcedStrictLogLine(alreadyLogged: Bool) -> String? {
        switch family {
        case .intel: alreadyLogged ? nil : "DMAR: IOMMU batching disallowed due to virtualization"
        case .amd: "AMD-Vi: Using strict mode due to virtualization"
        }
    }
}

/// One IOMMU hardware unit (`struct iommu_device`), e.g. `dmar0`.
public struct IOMMUUnit: Sendable, Equatable {
    public var name: String
    public var abilities: IOMMUDriverAbilities
    /// The sysfs directory of the unit's class device, from the sysfs root:
    /// `devices/virtual/iommu/dmar0` for Intel, or
    /// `devices/pci0000:00/0000:00:00.2/iommu/ivhd0` for AMD.
    public var sysfsPath: String
    /// Intel units: the registers shown under `intel-iommu/` (nil: that
    /// directory is not presented).
    public var registers: VTdRegisters?

    public init(name: String, abilities: IOMMUDriverAbilities, sysfsPath: String, registers: VTdRegisters? = nil) {
        self.name = name
        self.abilities = abilities
        self.sysfsPath = sysfsPath
        self.registers = registers
    }

    /// Whether the unit's driver forces strict invalidation at init: as the
    /// description says, else a VT-d unit's caching-mode bit
    /// (`VTdRegisters.forcesStrict`); a unit without registers does not.
    public func forcesStrict(boot: BootOptions) -> Bool {
        abilities.forcesStrict ?? registers?.forcesStrict(scalableMode: boot.intelScalableMode ?? false) ?? false
    }

    /// Whether the unit's driver registers it at this boot (intel-iommu
    /// stops before registering any unit with `intel_iommu=off`).
    public func isRegistered(boot: BootOptions) -> Bool {
        abilities.family != .intel || boot.intelIOMMUEnabled
    }
}

/// A PCI device driver as far as DMA ownership cares.
public struct PCIDriver: Sendable, Equatable, Hashable {
    public var name: String
    /// `driver_managed_dma`: vfio-pci, pci-stub, pcieport... manage DMA
    /// themselves, so binding them takes no group reference.
    public var managesDMA: Bool

    public init(name: String, managesDMA: Bool) {
        self.name = name
        self.managesDMA = managesDMA
    }

    /// What the driver's probe logs for the device, after `DRIVER BDF: `:
    /// pci-stub's `pci_stub_probe` says `claimed by stub` (drivers/pci/pci-stub.c).
    /// Other drivers' probe messages are about their hardware, not modelled.
    public var probeLogLine: String? { name == "pci-stub" ? "claimed by stub" : nil }

    /// Whether probe calls `pci_enable_device`: pci-stub's probe only claims
    /// the device, and vfio-pci enables it when user space opens it.
    public var enablesDevice: Bool { name != "pci-stub" && name != "vfio-pci" }

    /// The drivers that set `driver_managed_dma` in mainline (S13).
    public static let dmaManagingNames: Set<String> = ["vfio-pci", "pci-stub", "pcieport"]
}
