/// The kernel version whose behaviour a machine reproduces.
///
/// The logic consults the profile where kernels differ instead of forking
/// whole functions, so older or newer kernels are added as data. Only
/// differences the logic implements are listed.
public struct KernelProfile: Sendable, Equatable, CustomStringConvertible {
    public var name: String

    /// v6.7+ (b85b4f30846b) returns the allocator's errno when a default
    /// domain of the requested type cannot be allocated; v6.5–v6.6 always
    /// returned ENODEV.
    public var returnsAllocatorErrno: Bool

    /// v7.0+ (c279e83953d9, v7.1 fixes): a PCI reset of an ATS device parks
    /// its RID on the blocking domain, and every domain change of its group
    /// gets EBUSY until the reset is done (§7).
    public var fencesResets: Bool

    /// Up to v6.3 (`iommu_change_dev_def_domain`, §11): `type` can only be
    /// changed in a single-device group, under the device lock, with no
    /// driver bound (except the live DMA→DMA-FQ upgrade); an explicit type
    /// the driver cannot allocate silently falls back to DMA. v6.4+ use the
    /// DMA-ownership rule (EPERM while a driver owns the group) instead.
    public var singletonTypeStore: Bool

    /// v6.5+ (IOMMU_CAP_DEFERRED_FLUSH): DMA-ops setup downgrades DMA-FQ to
    /// DMA when the IOMMU driver cannot defer flushes. Older kernels only
    /// downgrade when the flush queue cannot be initialised.
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

    public var description: String { name }

    public init(name: String, returnsAllocatorErrno: Bool, fencesResets: Bool,
                singletonTypeStore: Bool = false, checksDeferredFlushCapability: Bool = true,
                logsGroupRemoval: Bool = false, bootLogSpacedSuffix: Bool = false,
                bootConflictUsesDefault: Bool = false) {
        self.name = name
        self.returnsAllocatorErrno = returnsAllocatorErrno
        self.fencesResets = fencesResets
        self.singletonTypeStore = singletonTypeStore
        self.checksDeferredFlushCapability = checksDeferredFlushCapability
        self.logsGroupRemoval = logsGroupRemoval
        self.bootLogSpacedSuffix = bootLogSpacedSuffix
        self.bootConflictUsesDefault = bootConflictUsesDefault
    }

    /// Linux 6.1, the kernel the second oracle transcript was printed by.
    public static let linux6_1 = KernelProfile(name: "linux-6.1", returnsAllocatorErrno: false, fencesResets: false,
                                               singletonTypeStore: true, checksDeferredFlushCapability: false,
                                               logsGroupRemoval: true, bootLogSpacedSuffix: true,
                                               bootConflictUsesDefault: true)

    /// Linux 6.12, the kernel the first oracle transcript was printed by.
    public static let linux6_12 = KernelProfile(name: "linux-6.12", returnsAllocatorErrno: true, fencesResets: false)

    /// Linux 7.1: 6.12's store path plus reset fencing with nested resets.
    public static let linux7_1 = KernelProfile(name: "linux-7.1", returnsAllocatorErrno: true, fencesResets: true)

    /// The behaviour new machines get.
    public static let current = linux7_1

    public static let all: [KernelProfile] = [.linux6_1, .linux6_12, .linux7_1]

    public static func named(_ name: String) -> KernelProfile? { all.first { $0.name == name } }
}
