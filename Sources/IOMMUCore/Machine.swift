import SystemPackage

/// A booted machine: its IOMMU units, PCI devices, drivers and groups.
///
/// Lock order: `LockClass` (LockOrder.swift) is the one list, for the
/// model (`rescanRemove`, `vfio`, `Device.lock`, `IOMMUGroup.state`,
/// `registry`, leaf locks), the sysfs tree and the server; debug builds
/// trap on a lock taken out of that order. No lock is taken per device in
/// a loop over devices; readers of a group's files take only that group's
/// mutex.
public final class Machine: Sendable {
    public let subsystem: IOMMUSubsystem
    public let units: [IOMMUUnit]
    public let drivers: [String: PCIDriver]
    /// The same drivers by index, for the devices' bound-driver atomics.
    let driverTable: DriverTable
    /// Each driver's bound devices, by driver name.
    let boundDevices: [String: BoundDevices]
    /// Every device the machine describes, in probe order, with its sysfs
    /// path: what a rescan can find again after a removal.
    let catalog: [DeviceRecord]
    /// Every bus the catalog implies, by number, and by the bridge it is
    /// behind; whether one exists now depends on that bridge.
    let buses: [PCIBusNumber: PCIBus]
    let bridgeBuses: [PCIAddress: PCIBus]
    private let unitsByName: [String: IOMMUUnit]
    private let registry: RankedMutex<Registry>
    let rescanRemove = RankedMutex(.rescanRemove, ())
    /// Legacy VFIO containers and open group files.
    let vfio = RankedMutex(.vfio, VFIOState())
    /// Dynamic ids by driver name (`pdrv->dynids`), a leaf lock.
    let dynamicIDs = RankedMutex<[String: [PCIDynamicID]]>(.dynamicIDs, [:])
    private let observerSlot = RankedMutex<(any MachineObserver)?>(.observer, nil)
    /// Devices whose function reset is running, with how many resets each
    /// (a leaf lock: `reset` holds the device lock for the reset's length).
    let resetsRunning = RankedMutex<[PCIAddress: Int]>(.resetsRunning, [:])
    /// vfio's `enable_unsafe_noiommu_mode` (`noiommu`), a leaf lock, and
    /// its value at boot.
    let noIOMMUMode: RankedMutex<Bool>
    public let bootNoIOMMUMode: Bool

    private struct Registry {
        var groups: [Int: IOMMUGroup] = [:]
        var groupIDs = IDAllocator()
        /// Live groups by topology label, so a re-added device finds its group.
        var groupByLabel: [String: IOMMUGroup] = [:]
        /// Present devices, in probe order.
        var devices: [Device] = []
        var byAddress: [PCIAddress: Device] = [:]
        /// `MachineSpec.groupIDs`, and which of those ids are still unused.
        var restoredIDs: [PCIAddress: Int] = [:]
        var unusedRestoredIDs: Set<Int> = []

        /// `iommu_group_alloc` for `creator`'s probe: the id a state
        /// restore gives it, else the lowest free one.
        mutating func newGroup(for creator: PCIAddress, subsystem: IOMMUSubsystem) -> IOMMUGroup {
            let id: Int
            if let restored = restoredIDs[creator], unusedRestoredIDs.remove(restored) != nil {
                id = restored
            } else {
                id = groupIDs.allocate()
            }
            let group = IOMMUGroup(id: id, subsystem: subsystem)
            groups[id] = group
            return group
        }
    }

    public var log: KernelLog { subsystem.log }
    public var faults: FaultInjector { subsystem.faults }
    public var profile: KernelProfile { subsystem.profile }

    /// Who follows tree changes (the sysfs view); set once, before use.
    /// Setting nil lets the observer go (it usually holds the machine).
    public func setObserver(_ observer: (any MachineObserver)?) { observerSlot.withLock { $0 = observer } }
    var observer: (any MachineObserver)? { observerSlot.withLock { $0 } }

    /// Boots `spec`: the IOMMU core's init lines, every device probed into
    /// its group in bus order, default domains set up, boot drivers bound.
    /// `profile` overrides the spec's kernel.
    public init(spec: MachineSpec, profile: KernelProfile? = nil,
                log: KernelLog = KernelLog(), faults: FaultInjector = FaultInjector()) throws(MachineSpecError) {
        let profile = profile ?? spec.profile ?? .current
        guard Set(spec.units.map(\.name)).count == spec.units.count else { throw MachineSpecError("two IOMMU units share a name") }
        let units = spec.units.filter { $0.isRegistered(boot: spec.boot) }
        let unitsByName = Dictionary(units.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let described = Set(spec.units.map(\.name))
        let drivers = Dictionary(spec.drivers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for d in spec.devices {
            if let name = d.unit, !described.contains(name) { throw MachineSpecError("device \(d.address): unknown IOMMU unit \(name)") }
            for name in [d.driver, d.nativeDriver].compactMap({ $0 }) where drivers[name] == nil {
                throw MachineSpecError("device \(d.address): unknown driver \(name)")
            }
        }

        let catalog = try Self.probeOrder(spec.devices)
        let buses = try PCIBus.buses(of: catalog, slots: spec.slots)
        // The PCI scan (acpi_init) precedes the IOMMU core: each bus
        // registers its slots, in scan order.
        var scanned: Set<PCIBusNumber> = []
        for record in catalog where scanned.insert(PCIBusNumber(of: record.spec.address)).inserted {
            buses[PCIBusNumber(of: record.spec.address)]!.registerSlots(log: log)
        }
        var (defaultType, _, bootLines) = spec.boot.subsystemDefault(profile: profile)
        bootLines.forEach(log.append)
        var strictnessLogged: Set<IOMMUDriverAbilities.Family> = []
        for unit in units where unit.forcesStrict(boot: spec.boot) {
            if let line = unit.abilities.forcedStrictLogLine(alreadyLogged: !strictnessLogged.insert(unit.abilities.family).inserted) {
                log.append(line)
            }
            if defaultType == .dmaFQ { defaultType = .dma }
        }

        self.subsystem = IOMMUSubsystem(profile: profile, log: log, faults: faults, defaultDomainType: defaultType,
                                        units: units.map(\.name))
        self.units = units
        self.unitsByName = unitsByName
        self.drivers = drivers
        self.driverTable = DriverTable(drivers.values)
        self.boundDevices = drivers.mapValues { _ in BoundDevices() }
        self.bootNoIOMMUMode = spec.boot.vfioNoIOMMU ?? false
        self.noIOMMUMode = RankedMutex(.noIOMMUMode, bootNoIOMMUMode)
        var registry = Registry(restoredIDs: spec.groupIDs, unusedRestoredIDs: Set(spec.groupIDs.values))
        for id in registry.unusedRestoredIDs.sorted() { registry.groupIDs.claim(id) }
        registry.devices.reserveCapacity(spec.devices.count)
        registry.byAddress.reserveCapacity(spec.devices.count)
        self.registry = RankedMutex(.registry, registry)
        self.catalog = catalog
        self.buses = buses
        self.bridgeBuses = Dictionary(buses.values.compactMap { bus in bus.bridge.map { ($0, bus) } }, uniquingKeysWith: { a, _ in a })


        // bus_iommu_probe: every device joins its group, then each new group
        // gets its default domain; drivers probe after that.
        var bootGroups: [IOMMUGroup] = []
        var bootDevices: [Device] = []
        for record in catalog {
            let (device, group, isNew) = try join(record, hotAdded: false)
            if isNew, let group { bootGroups.append(group) }
            bootDevices.append(device)
        }
        for group in bootGroups { group.setUpProbedDomain() }
        for (device, record) in zip(bootDevices, catalog) {
            guard let name = record.spec.driver else { continue }
            // A failing dma_configure fails the probe silently (really_probe).
            _ = bind(device, to: drivers[name]!)
        }
    }

    /// (vendor, device) of every described device whose native driver is
    /// `name`: the part of that driver's static id table the machine uses.
    func catalogIDs(nativeTo name: String) -> [(vendor: UInt16, device: UInt16)] {
        catalog.filter { $0.spec.nativeDriver == name }.map { ($0.spec.vendorID, $0.spec.deviceID) }
    }

    /// Every group, by id.
    public var groups: [IOMMUGroup] {
        registry.withLock { $0.groups.values.sorted { $0.id < $1.id } }
    }

    public func group(id: Int) -> IOMMUGroup? { registry.withLock { $0.groups[id] } }

    /// Every present device, in probe order.
    public var devices: [Device] { registry.withLock { $0.devices } }

    public func device(at address: PCIAddress) -> Device? { registry.withLock { $0.byAddress[address] } }

    /// Those of `devices` that are still present, in their order, checked
    /// under one hold of the registry.
    public func stillPresent(_ devices: [Device]) -> [Device] {
        withPresentDevices { present in devices.filter { present[$0.address] === $0 } }
    }

    /// Runs `body` with the present devices by address under one hold of
    /// the registry, for a loop that asks about many addresses; `body`
    /// takes no lock but leaf locks.
    func withPresentDevices<R>(_ body: ([PCIAddress: Device]) -> R) -> R {
        registry.withLock { r in body(r.byAddress) }
    }

    /// The present device whose name `buffer` holds, compared the way
    /// `bus_find_device_by_name` does (`sysfs_streq`: up to a NUL, one
    /// trailing newline allowed).
    public func device(named buffer: UnsafeRawBufferPointer) -> Device? {
        var length = buffer.firstIndex(of: 0) ?? buffer.count
        if length > 0 && buffer[length - 1] == UInt8(ascii: "\n") { length -= 1 }
        guard let address = PCIAddress(String(decoding: buffer[0..<length], as: UTF8.self)),
              address.description.utf8.count == length else { return nil }
        return device(at: address)
    }

    /// `pci_device_add` + `iommu_probe_device`: creates the device from its
    /// description and links it into its group (new groups take the lowest
    /// free id).
    ///
    /// A function other than 0 that is `hotAdded` without the multifunction
    /// bit in its own header gets a group of its own: `device_add` probes
    /// the IOMMU before `pci_scan_slot` marks fn > 0 multifunction, and
    /// `get_pci_function_alias_group` (iommu.c) skips a function that is
    /// not. At boot the IOMMU probes after the scan: the described groups.
    func join(_ record: DeviceRecord, hotAdded: Bool) throws(MachineSpecError) -> (Device, IOMMUGroup?, Bool) {
        let entry = record.spec
        let device = Device(record: record, unit: entry.unit.flatMap { unitsByName[$0] }, drivers: driverTable)
        // At boot the enumeration lines precede the IOMMU core's; a rescan
        // or a new VF prints its own, before the device joins its group.
        if hotAdded {
            subsystem.log.append(device.logPrefix + entry.enumerationLogLine(namingType: subsystem.profile.namesPCITypesAndResources))
        }
        readResources(device, hotAdded: hotAdded)
        // No IOMMU translates it, or its IOMMU's driver did not register the
        // unit (`intel_iommu=off`): `iommu_probe_device` finds no ops and
        // the device has no group (VFIO's no-IOMMU mode may give it one).
        guard device.unit != nil else {
            registry.withLock { r in
                r.devices.append(device)
                r.byAddress[device.address] = device
            }
            return (device, nil, false)
        }
        let alone = hotAdded && entry.address.function > 0 && !entry.multifunction
        let (group, isNew) = registry.withLock { r in
            if !alone, let existing = r.groupByLabel[entry.group] { return (existing, false) }
            let g = r.newGroup(for: entry.address, subsystem: subsystem)
            if !alone { r.groupByLabel[entry.group] = g }
            return (g, true)
        }
        if isNew { subsystem.events.emit(.groupCreated(group.id)) }
        try group.join(device)
        registry.withLock { r in
            r.devices.append(device)
            r.byAddress[device.address] = device
        }
        subsystem.events.emit(.deviceAdded(device.address, group: group.id))
        return (device, group, isNew)
    }

    /// `pci_stop_and_remove_bus_device`: removes `device` and everything
    /// behind it, deepest first. Drivers are unbound, each device leaves its
    /// group under the group's mutex, and a group left empty is released
    /// and its id freed (6.6+: no log line).
    public func remove(_ device: Device) {
        rescanRemove.withLock { _ in
            // A store still running on a removed device's `remove` file does
            // nothing (kernfs drains it; device_remove_file_self loses).
            guard device.isPresent else { return }
            removeSubtree(device)
        }
    }

    /// `pci_remove_bus_device` with `rescanRemove` held: the devices on a
    /// bridge's secondary bus go first, in bus order and each with what is
    /// behind it, then the bus itself (`pci_remove_bus`: its slots are
    /// unregistered), then the bridge. VFs go with their PF.
    func removeSubtree(_ device: Device) {
        rescanRemove.assertHeld()
        let prefix = device.sysfsPath + "/"
        var children: [PCIAddress: [Device]] = [:]
        for member in devices where member.physicalFunction == nil && member.sysfsPath.hasPrefix(prefix) {
            if let parent = member.record.spec.parent { children[parent, default: []].append(member) }
        }
        func destroy(_ member: Device) {
            if let bus = secondaryBus(of: member.address) {
                for child in children[member.address] ?? [] { destroy(child) }
                removeBus(bus)
            }
            removeOne(member)
        }
        destroy(device)
    }

    func removeOne(_ device: Device) {
        rescanRemove.assertHeld()
        // A PF takes its VFs with it (pci_iov_release).
        for vf in device.virtualFunctions.reversed() { removeOne(vf) }
        device.lock.withLock { state in
            state.virtualFunctions = []
            _ = unbindLocked(device, state)
            state.isPresent = false
            state.driverOverride = nil
        }
        let group = device.group
        if let group, subsystem.profile.logsGroupRemoval {
            subsystem.log.append(device.logPrefix + "Removing from iommu group \(group.id)")
        }
        let emptied = group.map { removeFromGroup(device, $0) } ?? false
        registry.withLock { r in
            r.devices.removeAll { $0 === device }
            r.byAddress[device.address] = nil
        }
        releaseResources(device)
        if let group {
            subsystem.events.emit(.deviceRemoved(device.address, group: group.id))
            if emptied { subsystem.events.emit(.groupReleased(group.id)) }
        }
        observer?.deviceRemoved(device, releasedGroup: emptied ? group : nil)
    }

    /// `pci_rescan_bus` of every bus (`/sys/bus/pci/rescan`): devices of the
    /// description that are missing (and whose bridge is present) come back
    /// in probe order, join their group or a new one with the lowest free
    /// id, and their driver probes again.
    public func rescan() {
        rescanRemove.withLock { _ in
            let roots = presentBuses.filter { $0.bridge == nil }
            addMissing(assigning: roots.map { .bus($0) }) { _ in true }
        }
    }

    /// A rescan that finds only the described devices at `addresses` (their
    /// bridges present): how a state restore re-adds a device the way a
    /// hot-plug added it, without bringing back others that stay removed.
    public func rescan(only addresses: Set<PCIAddress>) {
        rescanRemove.withLock { _ in
            let roots = presentBuses.filter { $0.bridge == nil }
            addMissing(assigning: roots.map { .bus($0) }) { addresses.contains($0.spec.address) }
        }
    }

    /// `dev_rescan_store` (pci-sysfs.c): `pci_rescan_bus(pdev->bus)`, the
    /// bus `device` is on and every bus behind it.
    public func rescan(busOf device: Device) {
        let path = device.sysfsPath
        let prefix = String(path[...path.lastIndex(of: "/")!])
        rescanRemove.withLock { _ in
            addMissing(assigning: buses[PCIBusNumber(of: device.address)].map { [.bus($0)] } ?? []) {
                $0.sysfsPath.hasPrefix(prefix)
            }
        }
    }

    /// The scan of a rescan with `rescanRemove` held, in the kernel's three
    /// steps: in probe order, each described device that `matches`, is
    /// missing, whose bridge is present and whose slot was not ejected is
    /// added (`pci_scan_child_bus`); then the new resources are assigned
    /// as `assignments` say; then the new devices' drivers probe
    /// (`pci_bus_add_devices`). The secondary bus of a bridge the scan
    /// added is created (its slots registered) before its first device,
    /// and its fixup logs once its devices are scanned.
    func addMissing(assigning assignments: [Assignment], _ matches: (DeviceRecord) -> Bool) {
        rescanRemove.assertHeld()
        let records = catalog.filter(matches)
        // Which of them and of their bridges exist is read once, under one
        // hold of the registry: only this scan adds devices meanwhile.
        let existing = withPresentDevices { present in
            records.map { (present[$0.spec.address] != nil, $0.spec.parent.map { present[$0] != nil } ?? true) }
        }
        var newBridges: Set<PCIAddress> = []
        var addedBridges: [PCIAddress: Device] = [:]
        var scanning: Device?
        var added: [Device] = []
        for (record, (exists, bridgeExists)) in zip(records, existing) {
            if let bridge = scanning, record.spec.parent != bridge.address {
                logBusFixup(bridge)
                scanning = nil
            }
            if let parent = record.spec.parent, newBridges.remove(parent) != nil {
                addBus(secondaryBus(of: parent)!)
                scanning = addedBridges[parent]
            }
            guard !exists, !isEjected(record) else { continue }
            if let parent = record.spec.parent, !bridgeExists, addedBridges[parent] == nil { continue }
            guard let (device, group, isNew) = try? join(record, hotAdded: true) else { continue }
            if secondaryBus(of: device.address) != nil {
                newBridges.insert(device.address)
                addedBridges[device.address] = device
            }
            finishHotAdd(device, group, isNew)
            added.append(device)
        }
        if let bridge = scanning { logBusFixup(bridge) }
        guard !added.isEmpty else { return }
        assignments.forEach(assign)
        for device in added { _ = probe(device) }
    }

    /// The rest of `iommu_probe_device` for a hot-added device: a new group
    /// gets its default domain, an existing one attaches the device to its
    /// current domain; then the sysfs view follows. A default domain that
    /// cannot be set up takes the device out of the group again where the
    /// profile's kernel does (`unwindsFailedIOMMUProbe`): the device is
    /// added to the bus all the same, untranslated. A device whose unit did
    /// not register has no group.
    func finishHotAdd(_ device: Device, _ group: IOMMUGroup?, _ isNew: Bool) {
        if let group, isNew {
            let error = group.setUpProbedDomain()
            if error != nil, subsystem.profile.unwindsFailedIOMMUProbe { undoIOMMUProbe(device, group) }
        } else {
            group?.attachProbed(device)
        }
        observer?.deviceAdded(device)
    }

    /// `__iommu_probe_device`'s `err_remove_gdev` and `iommu_deinit_device`:
    /// `device` leaves `group` (released, its id freed, if it was the only
    /// member) and is no longer linked to its unit. The kernel logs nothing.
    func undoIOMMUProbe(_ device: Device, _ group: IOMMUGroup) {
        if removeFromGroup(device, group) {
            subsystem.events.emit(.groupReleased(group.id))
            observer?.groupReleased(group)
        }
    }

    /// A state restore's way to the state a failed hot-plug probe leaves
    /// (see `undoIOMMUProbe`): `device`, which booted into its group, is
    /// taken out of it again. Nothing else reaches it: a rescan or a new VF
    /// whose domain setup fails is how a running machine gets there.
    public func restoreFailedIOMMUProbe(_ device: Device) {
        rescanRemove.withLock { _ in
            guard let group = device.group, subsystem.profile.unwindsFailedIOMMUProbe else { return }
            undoIOMMUProbe(device, group)
        }
    }

    /// `__iommu_group_remove_device` (with `rescanRemove` held): `device`
    /// leaves `group`; a group left empty leaves the registry and frees its
    /// id (`iommu_group_release`).
    /// - Returns: whether the group went away.
    func removeFromGroup(_ device: Device, _ group: IOMMUGroup) -> Bool {
        let emptied = group.leave(device)
        if emptied {
            registry.withLock { r in
                r.groups[group.id] = nil
                r.groupIDs.free(group.id)
                if let label = r.groupByLabel.first(where: { $0.value === group })?.key { r.groupByLabel[label] = nil }
            }
        }
        device.setGroup(nil)
        return emptied
    }

    /// `iommu_group_alloc` outside a probe (VFIO's no-IOMMU groups): a new,
    /// empty group with the lowest free id.
    func allocateGroup(for creator: PCIAddress) -> IOMMUGroup {
        let group = registry.withLock { $0.newGroup(for: creator, subsystem: subsystem) }
        subsystem.events.emit(.groupCreated(group.id))
        return group
    }

    /// Devices in the order the PCI core adds them (`pci_bus_add_devices`):
    /// all functions of a bus by address, then each bridge's secondary bus
    /// in turn, with each device's sysfs path.
    private static func probeOrder(_ devices: [MachineSpec.DeviceSpec]) throws(MachineSpecError) -> [DeviceRecord] {
        // Indices, not specs, are moved around: a spec is a large value and
        // a big machine has 100,000 of them.
        var children: [PCIAddress?: [Int]] = [:]
        var seen: Set<PCIAddress> = []
        seen.reserveCapacity(devices.count)
        for (index, d) in devices.enumerated() {
            guard seen.insert(d.address).inserted else { throw MachineSpecError("device \(d.address) is listed twice") }
            children[d.parent, default: []].append(index)
        }
        for parent in children.keys {
            if let parent, !seen.contains(parent) { throw MachineSpecError("parent bridge \(parent) is not a listed device") }
        }
        var result: [DeviceRecord] = []
        result.reserveCapacity(devices.count)
        func addBus(_ bus: [Int], under path: String?) {
            let sorted = bus.sorted { devices[$0].address < devices[$1].address }
            let first = result.count
            for index in sorted {
                let address = devices[index].address
                let sysfsPath = path.map { String(concatenating: $0, "/", address.description) }
                    ?? String(concatenating: "devices/", address.rootBusName, "/", address.description)
                result.append(DeviceRecord(spec: devices[index], sysfsPath: sysfsPath))
            }
            for (index, position) in zip(sorted, first...) {
                if let below = children[devices[index].address] { addBus(below, under: result[position].sysfsPath) }
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
            if let first = s.devices.first, first.device.unit?.name != device.unit?.name {
                throw MachineSpecError("group of \(first.device.address) and \(device.address) spans IOMMU units")
            }
            s.devices.append(.init(device: device, attached: nil, attachDeferred: device.attachDeferred))
        }
        device.setGroup(self)
        subsystem.log.append(device.logLine("Adding to iommu group " + String(id)))
    }

    /// `iommu_setup_default_domain(group, 0)` for a group that has just been
    /// created by probing, then DMA ops for every member.
    /// - Returns: why the default domain could not be set up.
    @discardableResult
    fileprivate func setUpProbedDomain() -> Errno? {
        state.withLock { s in
            guard s.devices.first?.device.unit != nil else { return nil }
            let error = subsystem.profile.bootConflictUsesDefault
                ? setUpProbedDomainWithoutConflicts(&s) : setupDefaultDomain(&s, target: nil)
            if error == nil { setUpDMAOps(&s) }
            return error
        }
    }
}

extension IOMMUGroup {
    /// A state restore's way to what a failed `iommu_alloc_default_domain`
    /// at hot-plug leaves up to v6.4 (`iommu_probe_device` ignores it): a
    /// group with no default domain and no domain, its members attached to
    /// nothing. Only a group no driver or user holds can be brought there.
    /// - Returns: EBUSY if something holds the group.
    public func restoreFailedDefaultDomain() -> Errno? {
        state.withLock { s in
            guard s.ownerCount == 0, s.owner == nil else { return .resourceBusy }
            if let unit = s.devices.first?.device.unit { subsystem.domainIDs.move(on: unit.name, from: s.domain, to: nil) }
            for index in s.devices.indices { s.devices[index].attached = nil }
            s.defaultDomain = nil
            s.domain = nil
            return nil
        }
    }

    /// A device probed into an existing group attaches to the group's
    /// current domain (`__iommu_probe_device`).
    fileprivate func attachProbed(_ device: Device) {
        state.withLock { s in
            guard let domain = s.domain, let index = s.devices.firstIndex(where: { $0.device === device }) else { return }
            _ = setDeviceDomain(&s, index, domain, mustSucceed: true)
        }
    }

    /// `__iommu_group_remove_device` + `iommu_deinit_device`: unlinks the
    /// device; from v6.6 the last one out frees the default and blocking
    /// domains (before, the group's release did).
    /// - Returns: whether the group is now empty (and goes away).
    fileprivate func leave(_ device: Device) -> Bool {
        state.withLock { s in
            s.devices.removeAll { $0.device === device }
            guard s.devices.isEmpty else { return false }
            // The group goes: its domain gives its id on the unit back.
            if let unit = device.unit { subsystem.domainIDs.move(on: unit.name, from: s.domain, to: nil) }
            guard subsystem.profile.freesDefaultDomainWithLastDevice else { return true }
            s.defaultDomain = nil
            s.blockingDomain = nil
            s.domain = nil
            return true
        }
    }
}
