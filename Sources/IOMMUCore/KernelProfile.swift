/// The kernel version whose behaviour a machine reproduces.
///
/// The logic consults the profile where kernels differ instead of forking
/// whole functions, so older or newer kernels are added as data. Only
/// differences the logic implements are listed.
public struct KernelProfile: Sendable, Equatable, CustomStringConvertible {
    public var name: String

    /// v6.7+ (b85b4f30846b "iommu: Fix return code in
    /// iommu_group_alloc_default_domain()"): a default domain of a type the
    /// driver cannot allocate fails with the allocator's errno; v6.5–v6.6
    /// always returned ENODEV.
    public var returnsAllocatorErrno: Bool

    /// v7.0+ (c279e83953d9, v7.1 fixes): a PCI reset of an ATS device parks
    /// its RID on the blocking domain, and every domain change of its group
    /// gets EBUSY until the reset is done (§7).
    public var fencesResets: Bool

    /// Up to v6.3 (`iommu_group_store_type`, §11): `type` can only be
    /// changed in a single-device group, under the device lock, with no
    /// driver bound (except the live DMA→DMA-FQ upgrade). v6.4 (series
    /// "iommu: Extend changing default domain to normal group") uses the
    /// DMA-ownership rule (EPERM while a driver owns the group) instead.
    public var singletonTypeStore: Bool

    /// Up to v6.4 (`iommu_change_dev_def_domain`, §11): the store combines
    /// the members' wishes the way boot does (a conflict means "no wish"),
    /// refuses an explicit type other than the wish with `Device cannot be
    /// in %s domain`, and an explicit type the driver cannot allocate falls
    /// back to DMA. v6.5 ("iommu: Consolidate the
    /// default_domain setup to one function") runs `iommu_setup_default_domain`.
    public var changesDeviceDefaultDomain: Bool

    /// v6.5+ (a4fdd9762272 "iommu: Use flush queue capability"): DMA-ops
    /// setup downgrades DMA-FQ to DMA when the IOMMU driver cannot defer
    /// flushes. Older kernels only downgrade when the flush queue cannot be
    /// initialised.
    public var checksDeferredFlushCapability: Bool

    /// Up to v6.3: removing a device from its group (hot-unplug) logs
    /// `Removing from iommu group N`.
    public var logsGroupRemoval: Bool

    /// Up to v6.4: the boot policy lines are printed with `"%s %s"`, so the
    /// optional ` (set via kernel command line)` is always preceded by a
    /// space that stays (as a trailing space) when the suffix is empty.
    public var bootLogSpacedSuffix: Bool

    /// Up to v6.4 (`probe_get_default_domain_type`): conflicting device wishes
    /// at boot log `Device needs domain type ...` and the group falls back to
    /// the global default type (and an unsupported boot type to DMA).
    public var bootConflictUsesDefault: Bool

    /// v6.6+ ("iommu: Add iommu_init/deinit_device() paired
    /// functions"): the last device leaving a group frees its default domain,
    /// so a store on the emptied group fails EINVAL (no default domain)
    /// instead of v6.4–v6.5's EPERM (no devices), and `type` reads `unknown`.
    public var freesDefaultDomainWithLastDevice: Bool

    /// v6.10+ ("iommu/dma: Centralise iommu_setup_dma_ops()"):
    /// a `type` store sets up the members' DMA ops under `group->mutex`.
    /// Before, `iommu_group_do_probe_finalize` ran after the mutex was
    /// dropped, so the new domain was visible (e.g. as DMA-FQ) before DMA-ops
    /// setup could downgrade it.
    public var setsUpDMAOpsUnderMutex: Bool

    /// v6.8+ (35259ff188e0 "PCI: Log device type during enumeration",
    /// dc4e6f21c3f8 "PCI: Use resource names in PCI log messages"): the
    /// enumeration line ends with the device type (`... class 0x010802 PCIe
    /// Endpoint`) and resources are named (`BAR 0 [mem ...]`) rather than
    /// given by register (`reg 0x10: [mem ...]`).
    public var namesPCITypesAndResources: Bool

    /// v6.5+ ("iommu: Consolidate the default_domain setup to one
    /// function"): a hot-added device whose `iommu_probe_device` cannot set
    /// up its new group's default domain is taken out again
    /// (`__iommu_probe_device`: `err_remove_gdev`, `iommu_deinit_device`):
    /// it stays on the bus in no group, without `iommu` links. Before, the
    /// failed `iommu_alloc_default_domain` was ignored and the group stayed
    /// without a default domain (`type` reads `unknown`).
    public var unwindsFailedIOMMUProbe: Bool

    /// v6.14 ("iommu: Handle race with default domain setup"; in stable
    /// 6.6.y and 6.12.y as well): `iommu_device_use_default_domain` defers
    /// a driver's probe (EPROBE_DEFER) while the group has no default
    /// domain. Before, the driver bound and took a reference anyway.
    public var defersProbeWithoutDefaultDomain: Bool

    /// Up to v6.10, intel-iommu's identity domain is `si_domain`, one
    /// `dmar_domain` for every identity group (`intel_iommu_domain_alloc`
    /// returns `&si_domain->domain`), and attaching it takes a domain id on
    /// the unit like any domain (`domain_attach_iommu`): `domains_used` is
    /// 3 on an all-identity boot. v6.11 (series "iommu/vt-d: Add support
    /// for static identity domain" / "iommu/vt-d: Remove si_domain") made
    /// identity the static `identity_domain`, which holds no id.
    public var identityDomainHoldsDomainID: Bool

    /// `pci_bridge_wait_for_secondary_bus` (drivers/pci/pci.c), when the
    /// link of a port does not train after a bus reset: 6.12.y prints the
    /// delay it waited (`"Data Link Layer Link Active not set in %d msec\n",
    /// delay`, the 2025 fix of the message, in 6.12 stable); 6.1.y and the
    /// mainline releases before it print the fixed `... in 1000 msec`.
    public var namesLinkWaitDelay: Bool

    /// v6.8+ ("PCI: Log bridge info when first enumerating bridge", in the
    /// series of 35259ff188e0): a hot-added bridge's bus range and windows
    /// are logged by `pci_read_bridge_windows` when it is enumerated, and
    /// the fixup of its secondary bus logs only `PCI bridge to [bus ..]`.
    /// Before, `pci_read_bridge_bases` logs the range and the windows when
    /// the secondary bus has been scanned.
    public var logsBridgeWindowsAtEnumeration: Bool

    /// A hot-plug slot's `module` link (`pci_hp_create_module_link`, called
    /// by `fs_add_slot`): present on 6.1 (`kset_find_obj(module_kset,
    /// slot->mod_name)` finds the built-in acpiphp), absent from the 6.12
    /// transcript's slots (the lookup finds no module object there).
    public var linksSlotModule: Bool

    public var description: String { name }

    public init(name: String, returnsAllocatorErrno: Bool, fencesResets: Bool,
                singletonTypeStore: Bool = false, changesDeviceDefaultDomain: Bool = false,
                checksDeferredFlushCapability: Bool = true, logsGroupRemoval: Bool = false,
                bootLogSpacedSuffix: Bool = false, bootConflictUsesDefault: Bool = false,
                freesDefaultDomainWithLastDevice: Bool = true, setsUpDMAOpsUnderMutex: Bool = true,
                namesPCITypesAndResources: Bool = true, unwindsFailedIOMMUProbe: Bool = true,
                defersProbeWithoutDefaultDomain: Bool = false, identityDomainHoldsDomainID: Bool = false,
                namesLinkWaitDelay: Bool = false, logsBridgeWindowsAtEnumeration: Bool? = nil,
                linksSlotModule: Bool = false) {
        self.name = name
        self.returnsAllocatorErrno = returnsAllocatorErrno
        self.fencesResets = fencesResets
        self.singletonTypeStore = singletonTypeStore
        self.changesDeviceDefaultDomain = changesDeviceDefaultDomain
        self.checksDeferredFlushCapability = checksDeferredFlushCapability
        self.logsGroupRemoval = logsGroupRemoval
        self.bootLogSpacedSuffix = bootLogSpacedSuffix
        self.bootConflictUsesDefault = bootConflictUsesDefault
        self.freesDefaultDomainWithLastDevice = freesDefaultDomainWithLastDevice
        self.setsUpDMAOpsUnderMutex = setsUpDMAOpsUnderMutex
        self.namesPCITypesAndResources = namesPCITypesAndResources
        self.unwindsFailedIOMMUProbe = unwindsFailedIOMMUProbe
        self.defersProbeWithoutDefaultDomain = defersProbeWithoutDefaultDomain
        self.identityDomainHoldsDomainID = identityDomainHoldsDomainID
        self.namesLinkWaitDelay = namesLinkWaitDelay
        // The same release as the type and resource names.
        self.logsBridgeWindowsAtEnumeration = logsBridgeWindowsAtEnumeration ?? namesPCITypesAndResources
        self.linksSlotModule = linksSlotModule
    }

    /// Linux 6.1, the kernel the second oracle transcript was printed by.
    public static let linux6_1 = KernelProfile(name: "linux-6.1", returnsAllocatorErrno: false, fencesResets: false,
                                               singletonTypeStore: true, changesDeviceDefaultDomain: true,
                                               checksDeferredFlushCapability: false, logsGroupRemoval: true,
                                               bootLogSpacedSuffix: true, bootConflictUsesDefault: true,
                                               freesDefaultDomainWithLastDevice: false, setsUpDMAOpsUnderMutex: false,
                                               namesPCITypesAndResources: false, unwindsFailedIOMMUProbe: false,
                                               identityDomainHoldsDomainID: true, linksSlotModule: true)

    /// Linux 6.4: any group may change type while no driver owns it, but
    /// through 6.1's `iommu_change_dev_def_domain`.
    public static let linux6_4 = KernelProfile(name: "linux-6.4", returnsAllocatorErrno: false, fencesResets: false,
                                               changesDeviceDefaultDomain: true, checksDeferredFlushCapability: false,
                                               bootLogSpacedSuffix: true, bootConflictUsesDefault: true,
                                               freesDefaultDomainWithLastDevice: false, setsUpDMAOpsUnderMutex: false,
                                               namesPCITypesAndResources: false, unwindsFailedIOMMUProbe: false,
                                               identityDomainHoldsDomainID: true)

    /// Linux 6.5: one `iommu_setup_default_domain` for boot and store, the
    /// deferred-flush capability; allocation failures are ENODEV.
    public static let linux6_5 = KernelProfile(name: "linux-6.5", returnsAllocatorErrno: false, fencesResets: false,
                                               freesDefaultDomainWithLastDevice: false, setsUpDMAOpsUnderMutex: false,
                                               namesPCITypesAndResources: false, identityDomainHoldsDomainID: true)

    /// Linux 6.6 (the 6.6.y stable series): the group's domains go with
    /// its last device; a probe waits for the group's default domain.
    public static let linux6_6 = KernelProfile(name: "linux-6.6", returnsAllocatorErrno: false, fencesResets: false,
                                               setsUpDMAOpsUnderMutex: false, namesPCITypesAndResources: false,
                                               defersProbeWithoutDefaultDomain: true, identityDomainHoldsDomainID: true)

    /// Linux 6.7–6.9: the allocator's errno reaches the writer; 6.8 names
    /// PCI device types and resources in its log.
    public static let linux6_7 = KernelProfile(name: "linux-6.7", returnsAllocatorErrno: true, fencesResets: false,
                                               setsUpDMAOpsUnderMutex: false, namesPCITypesAndResources: false,
                                               identityDomainHoldsDomainID: true)
    public static let linux6_8 = KernelProfile(name: "linux-6.8", returnsAllocatorErrno: true, fencesResets: false,
                                               setsUpDMAOpsUnderMutex: false, identityDomainHoldsDomainID: true)
    public static let linux6_9 = renamed(linux6_8, "linux-6.9")

    /// Linux 6.10: DMA ops are set up under the group's mutex.
    public static let linux6_10 = KernelProfile(name: "linux-6.10", returnsAllocatorErrno: true, fencesResets: false,
                                                identityDomainHoldsDomainID: true)
    /// Linux 6.11: intel-iommu's static identity domain.
    public static let linux6_11 = KernelProfile(name: "linux-6.11", returnsAllocatorErrno: true, fencesResets: false)

    /// Linux 6.12 (the 6.12.y stable series, 6.12.95), the kernel the
    /// first oracle transcript was printed by: 6.11's logic, and a probe
    /// waits for the group's default domain.
    public static let linux6_12 = KernelProfile(name: "linux-6.12", returnsAllocatorErrno: true, fencesResets: false,
                                                defersProbeWithoutDefaultDomain: true, namesLinkWaitDelay: true)

    /// Linux 7.1: 6.12's store path plus reset fencing with nested resets.
    public static let linux7_1 = KernelProfile(name: "linux-7.1", returnsAllocatorErrno: true, fencesResets: true,
                                               defersProbeWithoutDefaultDomain: true, namesLinkWaitDelay: true)

    /// The behaviour new machines get.
    public static let current = linux7_1

    /// Oldest first.
    public static let all: [KernelProfile] = [.linux6_1, .linux6_4, .linux6_5, .linux6_6, .linux6_7, .linux6_8,
                                              .linux6_9, .linux6_10, .linux6_11, .linux6_12, .linux7_1]

    /// A release that changed nothing the model implements.
    private static func renamed(_ profile: KernelProfile, _ name: String) -> KernelProfile {
        var copy = profile
        copy.name = name
        return copy
    }

    public static func named(_ name: String) -> KernelProfile? { all.first { $0.name == name } }
}
