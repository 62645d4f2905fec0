import Synchronization

/// A PCI device behind an IOMMU unit.
///
/// Identity and firmware facts are immutable. The bound driver and the
/// enable count are atomics, as `dev->driver` and `pdev->enable_cnt` are
/// read without a lock (`dev_driver_string` in log prefixes, under a group
/// mutex; `pci_is_enabled` in a bus's resource assignment); both change
/// only under the device lock.
public final class Device: Sendable {
    /// What the bus scan found and where it sits in sysfs; shared with the
    /// machine's catalog, which a rescan re-creates removed devices from.
    public let record: DeviceRecord
    /// nil for a device without IOMMU translation (a VFIO no-IOMMU group member).
    public let unit: IOMMUUnit?

    public var address: PCIAddress { record.spec.address }
    public var vendorID: UInt16 { record.spec.vendorID }
    public var deviceID: UInt16 { record.spec.deviceID }
    /// 24-bit class code, e.g. 0x020000 for an Ethernet controller.
    public var classCode: UInt32 { record.spec.classCode }
    /// The directory of this device under the sysfs root, e.g.
    /// `devices/pci0000:00/0000:00:1c.0/0000:02:00.0`.
    public var sysfsPath: String { record.sysfsPath }
    /// What the IOMMU driver's `def_domain_type()` answers for this device.
    public var domainWish: DomainType? { record.spec.domainWish }
    /// `pci_dev->untrusted`: external-facing, the core forces DMA.
    public var untrusted: Bool { record.spec.untrusted }
    /// Regions the IOMMU driver reports for this device, in kernel order.
    public var reservedRegions: [ReservedRegion] { record.spec.reservedRegions }
    /// The driver whose id table matches this device (the one bound at
    /// boot); `drivers_probe` and a rescan bind it again.
    public var nativeDriverName: String? { record.spec.nativeDriver }
    /// ATS-capable: a reset fences the device's RID off (§7).
    public var ats: Bool { record.spec.ats }
    /// How long a function reset keeps the device fenced off.
    public var resetDuration: Duration { record.spec.resetDuration }
    /// `reset_method`'s methods, e.g. `flr`, `pm`, `bus`; empty: no `reset`.
    public var resetMethods: [String] { record.spec.resetMethods }
    /// The SR-IOV capability of a PF.
    public var sriov: MachineSpec.SRIOVSpec? { record.spec.sriov }
    /// For a VF: its PF.
    public var physicalFunction: PCIAddress? { record.spec.physicalFunction }
    /// `ops->is_attach_deferred`: the first attach waits for a DMA mapping.
    public var attachDeferred: Bool { record.spec.attachDeferred }
    /// What the config space shows beyond the ids.
    public var function: PCIFunctionSpec { record.spec.configFacts }

    /// `enable`: `pdev->enable_cnt`, one for a bound driver that enables the
    /// device plus the enables written to `enable` while unbound.
    public var enableCount: Int {
        userEnables.load(ordering: .acquiring) + (driver?.enablesDevice == true ? 1 : 0)
    }

    /// The registered drivers, which `binding` indexes.
    private let drivers: DriverTable
    /// The bound driver's index in `drivers`, -1 for none.
    private let binding = Atomic<Int>(-1)
    /// `pci_enable_device` calls through `enable` (made while no driver was
    /// bound) not yet undone by a `pci_disable_device`.
    let userEnables = Atomic<Int>(0)
    private let groupRef = RankedMutex<IOMMUGroup?>(.deviceGroup, nil)
    /// `device_lock()`: serializes driver binding, reset and removal of
    /// this device (see `LockClass` for its place in the lock order).
    let lock: RankedMutex<DeviceLockState>

    init(record: DeviceRecord, unit: IOMMUUnit?, drivers: DriverTable) {
        self.record = record
        self.unit = unit
        self.drivers = drivers
        self.lock = RankedMutex(.device, key: record.spec.address.lockKey, DeviceLockState())
    }

    /// `dev->iommu->require_direct`: firmware asked for a 1:1 mapping, so the
    /// device can never sit in a blocking domain.
    public var requiresDirectMapping: Bool {
        reservedRegions.contains { $0.kind == .direct }
    }

    /// The bound driver, if any.
    public var driver: PCIDriver? {
        let index = binding.load(ordering: .acquiring)
        return index < 0 ? nil : drivers.all[index]
    }

    /// With the device lock held (`Machine.setDriver(_:of:)`).
    func setDriver(_ driver: PCIDriver?) {
        lock.assertHeld()
        binding.store(driver.map { drivers.index(of: $0) } ?? -1, ordering: .releasing)
    }

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

    /// `dev->iommu->iommu_dev`: the unit that probed the device, which the
    /// `iommu` link names; nil without a unit, and once a failed probe was
    /// undone (`iommu_deinit_device` unlinks it, the device is in no group).
    public var iommu: IOMMUUnit? { group == nil ? nil : unit }

    func setGroup(_ group: IOMMUGroup?) { groupRef.withLock { $0 = group } }

    /// `dev_printk` prefix: the bound driver's name, else the bus name.
    var logPrefix: String { String(concatenating: driver?.name ?? "pci", " ", address.description, ": ") }

    /// A `dev_printk` line: the prefix, then `message`.
    func logLine(_ message: String) -> String {
        String(concatenating: driver?.name ?? "pci", " ", address.description, ": ", message)
    }
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

/// One PCI function as the bus scan finds it, with its sysfs directory.
/// Immutable and shared: a big machine has 100,000 of them, and the
/// machine's catalog and the live `Device` hold the same one.
public final class DeviceRecord: Sendable {
    /// The description, with its reserved regions in kernel order.
    public let spec: MachineSpec.DeviceSpec
    /// e.g. `devices/pci0000:00/0000:00:1c.0/0000:02:00.0`.
    public let sysfsPath: String

    public init(spec: MachineSpec.DeviceSpec, sysfsPath: String) {
        var spec = spec
        if spec.reservedRegions.count > 1 {
            var sorted: [ReservedRegion] = []
            for region in spec.reservedRegions { ReservedRegion.insert(region, into: &sorted) }
            // Keep the description's storage when it was already in kernel order.
            if sorted != spec.reservedRegions { spec.reservedRegions = sorted }
        }
        self.spec = spec
        self.sysfsPath = sysfsPath
    }
}

extension PCIAddress {
    /// The address as one number that sorts like the address: the order
    /// in which nested device locks are taken.
    var lockKey: UInt64 {
        UInt64(domain) << 16 | UInt64(bus) << 8 | UInt64(device) << 3 | UInt64(function)
    }
}
