import Synchronization

/// A PCI device behind an IOMMU unit.
///
/// Identity and firmware facts are immutable. The bound driver is kept
/// behind `binding`, a leaf lock: it is read for log prefixes
/// (`dev_driver_string`) while a group mutex is held, so nothing is ever
/// locked inside it.
public final class Device: Sendable {
    public let address: PCIAddress
    public let vendorID: UInt16
    public let deviceID: UInt16
    /// 24-bit class code, e.g. 0x020000 for an Ethernet controller.
    public let classCode: UInt32
    /// The directory of this device under the sysfs root, e.g.
    /// `devices/pci0000:00/0000:00:1c.0/0000:02:00.0`.
    public let sysfsPath: String
    /// nil for a device without IOMMU translation (a VFIO no-IOMMU group member).
    public let unit: IOMMUUnit?
    /// What the IOMMU driver's `def_domain_type()` answers for this device.
    public let domainWish: DomainType?
    /// `pci_dev->untrusted`: external-facing, the core forces DMA.
    public let untrusted: Bool
    /// Regions the IOMMU driver reports for this device, in kernel order.
    public let reservedRegions: [ReservedRegion]

    /// The driver whose id table matches this device (the one bound at
    /// boot); `drivers_probe` and a rescan bind it again.
    public let nativeDriverName: String?
    /// ATS-capable: a reset fences the device's RID off (§7).
    public let ats: Bool
    /// How long a function reset keeps the device fenced off.
    public let resetDuration: Duration
    /// `reset_method`'s methods, e.g. `flr`, `pm`, `bus`; empty: no `reset`.
    public let resetMethods: [String]
    /// The SR-IOV capability of a PF.
    public var sriov: MachineSpec.SRIOVSpec? { sriovCapability.wrappedValue }
    private let sriovCapability: OutOfLine<MachineSpec.SRIOVSpec>
    /// For a VF: its PF.
    public let physicalFunction: PCIAddress?
    /// `ops->is_attach_deferred`: the first attach waits for a DMA mapping.
    public let attachDeferred: Bool

    private let binding = Mutex<PCIDriver?>(nil)
    private let groupRef = Mutex<IOMMUGroup?>(nil)
    /// `device_lock()`: serializes driver binding, reset and removal of
    /// this device; outermost but for the machine's rescan/remove lock.
    let lock = Mutex(DeviceLockState())

    public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32,
                sysfsPath: String, unit: IOMMUUnit?, domainWish: DomainType? = nil,
                untrusted: Bool = false, reservedRegions: [ReservedRegion] = [],
                nativeDriverName: String? = nil, ats: Bool = false, resetDuration: Duration = .milliseconds(100),
                resetMethods: [String] = [], sriov: MachineSpec.SRIOVSpec? = nil,
                physicalFunction: PCIAddress? = nil, attachDeferred: Bool = false) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.sysfsPath = sysfsPath
        self.unit = unit
        self.domainWish = domainWish
        self.untrusted = untrusted
        self.nativeDriverName = nativeDriverName
        self.ats = ats
        self.resetDuration = resetDuration
        self.resetMethods = resetMethods
        self.sriovCapability = OutOfLine(wrappedValue: sriov)
        self.physicalFunction = physicalFunction
        self.attachDeferred = attachDeferred
        var sorted: [ReservedRegion] = []
        for region in reservedRegions { ReservedRegion.insert(region, into: &sorted) }
        // Keep the caller's storage when it was already in kernel order.
        self.reservedRegions = sorted == reservedRegions ? reservedRegions : sorted
    }

    /// `dev->iommu->require_direct`: firmware asked for a 1:1 mapping, so the
    /// device can never sit in a blocking domain.
    public var requiresDirectMapping: Bool {
        reservedRegions.contains { $0.kind == .direct }
    }

    /// The bound driver, if any.
    public var driver: PCIDriver? { binding.withLock { $0 } }

    func setDriver(_ driver: PCIDriver?) { binding.withLock { $0 = driver } }

    /// `reset_method` now: the boot methods unless a user chose others.
    public var activeResetMethods: [String] { lock.withLock { $0.resetMethods ?? resetMethods } }

    /// `driver_override`, if set.
    public var driverOverride: String? { lock.withLock { $0.driverOverride } }

    /// A PF's enabled VFs.
    public var virtualFunctions: [Device] { lock.withLock { $0.virtualFunctions } }

    /// `sriov_drivers_autoprobe`.
    public var driversAutoprobe: Bool { lock.withLock { $0.driversAutoprobe ?? sriov?.driversAutoprobe ?? true } }

    /// The iommufd context the device is bound to, if any.
    public var iommufdContext: String? { lock.withLock { $0.iommufdContext } }

    /// False once the device was hot-removed.
    public var isPresent: Bool { lock.withLock { $0.isPresent } }

    /// The IOMMU group the device joined at probe.
    public var group: IOMMUGroup? { groupRef.withLock { $0 } }

    func setGroup(_ group: IOMMUGroup?) { groupRef.withLock { $0 = group } }

    /// `dev_printk` prefix: the bound driver's name, else the bus name.
    var logPrefix: String { (driver?.name ?? "pci") + " " + address.description + ": " }
}

/// What `Device.lock` protects.
struct DeviceLockState {
    @OutOfLine var driverOverride: String?
    var isPresent = true
    /// A PF's enabled VFs, in VF index order.
    var virtualFunctions: [Device] = []
    /// `sriov_drivers_autoprobe`.
    var driversAutoprobe: Bool?
    /// Methods a user wrote to `reset_method`; nil: the probed default.
    var resetMethods: [String]?
    /// The iommufd context the device is bound to (`VFIO_DEVICE_BIND_IOMMUFD`).
    @OutOfLine var iommufdContext: String?
}
