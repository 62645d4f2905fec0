import Synchronization
import SystemPackage

/// A booted machine: its IOMMU units, PCI devices, drivers and groups.
///
/// Lock order (outermost first), the port of the kernel's:
/// 1. `IOMMUGroup.state` (`group->mutex`), one group at a time;
/// 2. `Machine.registry` (the group IDA and device lists);
/// 3. leaf locks that never take another: `Device` binding and group
///    pointers, `KernelLog`, `FaultInjector`.
/// No lock is taken in a loop over devices; readers of a group's files
/// take only that group's mutex.
public final class Machine: Sendable {
    public let subsystem: IOMMUSubsystem
    public let units: [IOMMUUnit]
    public let drivers: [String: PCIDriver]
    private let registry: Mutex<Registry>

    private struct Registry {
        var groups: [Int: IOMMUGroup] = [:]
        var groupIDs = IDAllocator()
        /// In probe order.
        var devices: [Device] = []
        var byAddress: [PCIAddress: Device] = [:]
    }

    public var log: KernelLog { subsystem.log }
    public var faults: FaultInjector { subsystem.faults }
    public var profile: KernelProfile { subsystem.profile }

    /// Boots `spec`: the IOMMU core's init lines, every device probed into
    /// its group in bus order, default domains set up, boot drivers bound.
    public init(spec: MachineSpec, profile: KernelProfile = .current,
                log: KernelLog = KernelLog(), faults: FaultInjector = FaultInjector()) throws(MachineSpecError) {
        let unitsByName = Dictionary(spec.units.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        guard unitsByName.count == spec.units.count else { throw MachineSpecError("two IOMMU units share a name") }
        let drivers = Dictionary(spec.drivers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })

        var (defaultType, _, bootLines) = spec.boot.subsystemDefault()
        bootLines.forEach(log.append)
        var strictnessLogged: Set<IOMMUDriverAbilities.Family> = []
        for unit in spec.units where unit.abilities.forcesStrict {
            if let line = unit.abilities.forcedStrictLogLine(alreadyLogged: !strictnessLogged.insert(unit.abilities.family).inserted) {
                log.append(line)
            }
            if defaultType == .dmaFQ { defaultType = .dma }
        }

        self.subsystem = IOMMUSubsystem(profile: profile, log: log, faults: faults, defaultDomainType: defaultType)
        self.units = spec.units
        self.drivers = drivers
        self.registry = Mutex(Registry())

        let ordered = try Self.probeOrder(spec.devices)
        var groupsByLabel: [String: IOMMUGroup] = [:]
        var bootGroups: [IOMMUGroup] = []
        for (entry, path) in ordered {
            var unit: IOMMUUnit?
            if let name = entry.unit {
                guard let u = unitsByName[name] else { throw MachineSpecError("device \(entry.address): unknown IOMMU unit \(name)") }
                unit = u
            }
            let device = Device(address: entry.address, vendorID: entry.vendorID, deviceID: entry.deviceID,
                                classCode: entry.classCode, sysfsPath: path, unit: unit,
                                domainWish: entry.domainWish, untrusted: entry.untrusted,
                                reservedRegions: entry.reservedRegions)
            let group: IOMMUGroup
            if let existing = groupsByLabel[entry.group] {
                group = existing
            } else {
                group = registry.withLock { r in
                    let g = IOMMUGroup(id: r.groupIDs.allocate(), subsystem: subsystem)
                    r.groups[g.id] = g
                    return g
                }
                groupsByLabel[entry.group] = group
                bootGroups.append(group)
            }
            try group.join(device)
            registry.withLock { r in
                r.devices.append(device)
                r.byAddress[device.address] = device
            }
        }
        for group in bootGroups { group.setUpBootDomain() }
        for (entry, _) in ordered {
            guard let name = entry.driver else { continue }
            guard let driver = drivers[name] else { throw MachineSpecError("device \(entry.address): unknown driver \(name)") }
            let device = registry.withLock { $0.byAddress[entry.address]! }
            // A failing dma_configure fails the probe silently (really_probe).
            _ = bind(device, to: driver)
        }
    }

    /// Every group, by id.
    public var groups: [IOMMUGroup] {
        registry.withLock { $0.groups.values.sorted { $0.id < $1.id } }
    }

    public func group(id: Int) -> IOMMUGroup? { registry.withLock { $0.groups[id] } }

    /// Every device, in probe order.
    public var devices: [Device] { registry.withLock { $0.devices } }

    public func device(at address: PCIAddress) -> Device? { registry.withLock { $0.byAddress[address] } }

    /// Binds `driver` to `device` through the PCI core's DMA configure step
    /// (`pci_dma_configure`): a driver that does not manage DMA itself takes
    /// a reference on the group's default domain, and fails to probe
    /// (EBUSY) while a user owns the group.
    public func bind(_ device: Device, to driver: PCIDriver) -> Errno? {
        if device.driver != nil { return .resourceBusy }
        if !driver.managesDMA, let group = device.group, let error = group.useDefaultDomain() { return error }
        device.setDriver(driver)
        return nil
    }

    /// Unbinds the device's driver (`pci_dma_cleanup` gives the group
    /// reference back).
    public func unbind(_ device: Device) -> Errno? {
        guard let driver = device.driver else { return .noDevice }
        device.setDriver(nil)
        if !driver.managesDMA { device.group?.unuseDefaultDomain() }
        return nil
    }

    /// Devices in the order the PCI core adds them (`pci_bus_add_devices`):
    /// all functions of a bus by address, then each bridge's secondary bus
    /// in turn, with each device's sysfs path.
    private static func probeOrder(_ devices: [MachineSpec.DeviceSpec]) throws(MachineSpecError) -> [(MachineSpec.DeviceSpec, String)] {
        var children: [PCIAddress?: [MachineSpec.DeviceSpec]] = [:]
        var seen: Set<PCIAddress> = []
        for d in devices {
            guard seen.insert(d.address).inserted else { throw MachineSpecError("device \(d.address) is listed twice") }
            children[d.parent, default: []].append(d)
        }
        for parent in children.keys {
            if let parent, !seen.contains(parent) { throw MachineSpecError("parent bridge \(parent) is not a listed device") }
        }
        var result: [(MachineSpec.DeviceSpec, String)] = []
        func addBus(_ bus: [MachineSpec.DeviceSpec], under path: String?) {
            let sorted = bus.sorted { $0.address < $1.address }
            var paths: [String] = []
            for d in sorted {
                let base = path ?? "devices/" + d.address.rootBusName
                paths.append(base + "/" + d.address.description)
                result.append((d, paths.last!))
            }
            for (d, p) in zip(sorted, paths) {
                if let below = children[d.address] { addBus(below, under: p) }
            }
        }
        addBus(children[nil] ?? [], under: nil)
        guard result.count == devices.count else { throw MachineSpecError("the bridge hierarchy has a cycle") }
        return result
    }
}

extension IOMMUGroup {
    /// `iommu_group_add_device` during probe: link the device in and log it.
    fileprivate func join(_ device: Device) throws(MachineSpecError) {
        try state.withLock { (s: inout GroupState) throws(MachineSpecError) in
            if let first = s.devices.first {
                if (first.device.unit == nil) != (device.unit == nil) || first.device.unit?.name != device.unit?.name {
                    throw MachineSpecError("group of \(first.device.address) and \(device.address) spans IOMMU units")
                }
            } else if device.unit == nil {
                // VFIO's no-IOMMU mode names its fake groups.
                s.name = "vfio-noiommu"
            }
            s.devices.append(.init(device: device, attached: nil))
        }
        device.setGroup(self)
        subsystem.log.append(device.logPrefix + "Adding to iommu group \(id)")
    }

    /// The boot-time `iommu_setup_default_domain(group, 0)` of
    /// `bus_iommu_probe`, then DMA ops for every member.
    fileprivate func setUpBootDomain() {
        state.withLock { s in
            guard s.devices.first?.device.unit != nil else { return }
            if setupDefaultDomain(&s, target: nil) == nil { setUpDMAOps(&s) }
        }
    }
}
