import IOMMUCore
import SystemPackage

/// The sysfs view of a `Machine`: the nodes a real kernel creates for its
/// IOMMU units, PCI devices, drivers and groups, kept in step with the
/// machine as devices come and go and drivers bind.
public final class MachineTree: MachineObserver {
    public let machine: Machine
    public let tree: SysfsTree
    /// Moves whenever a device joins or leaves a group (`reserved_regions`).
    private let membership = MembershipGeneration()
    private let knownGroupCount = RankedMutex<(generation: UInt64, count: Int)?>(.groupCount, nil)
    private let driverOverrideKnob: DeviceKnob
    private let removeKnob: DeviceKnob
    /// `drivers_autoprobe` and `resource_alignment` of /sys/bus/pci.
    let busSettings = PCIBusSettings()

    public init(machine: Machine) {
        self.machine = machine
        self.tree = SysfsTree()
        self.driverOverrideKnob = DeviceKnob(.driverOverride, machine: machine)
        self.removeKnob = DeviceKnob(.remove, machine: machine)
        // Created at core_initcall whenever CONFIG_IOMMU_API=y, even empty.
        // Listings and device contents are built on first use, from the
        // model as it is then: a big machine mounts without building them.
        // A lookup before the first listing makes only what it names.
        tree.makeDirectories(Paths.iommuGroups).directory!.populateLazily(
            resolve: { [unowned self] name in
                if let id = Self.decimal(name), let group = machine.group(id: id) { addGroup(group) }
            },
            subdirectories: { [unowned self] in groupCount },
            { [unowned self] in for group in machine.groups { addGroup(group) } })
        tree.makeDirectories(Paths.pciDevices).directory!.populateLazily(
            resolve: { [unowned self] name in
                let device = Array(name.utf8).withUnsafeBytes { machine.device(named: $0) }
                if let device, device.address.description == name { linkBusEntry(device) }
            },
            subdirectories: { 0 },
            { [unowned self] in for device in machine.devices { linkBusEntry(device) } })
        tree.makeDirectories(Paths.iommuClass)
        addBusKnobs()
        addBusClassAndSlots()
        addModuleParameters()
        for driver in machine.drivers.values.sorted(by: { $0.name < $1.name }) { addDriver(driver) }
        for unit in machine.units { addUnit(unit) }
        addDeviceDirectories()
        machine.setObserver(self)
    }

    /// `devices/`: the host bridges' directories are made when `devices/` is
    /// first used, and the device directories below one host bridge when
    /// that is, so that mounting a big machine builds none of them.
    private func addDeviceDirectories() {
        let devices = tree.makeDirectories(Paths.devices)
        devices.directory!.populateLazily { [unowned self] in
            // One pass over the model: the devices of each host bridge.
            var members: [Substring: [Device]] = [:]
            var order: [Substring] = []
            for device in machine.devices {
                guard let root = Self.hostBridge(of: device.sysfsPath) else { continue }
                if members[root] == nil { order.append(root) }
                members[root, default: []].append(device)
            }
            for root in order {
                let dir = tree.makeDirectory(String(root), in: devices)
                let list = members[root]!
                dir.directory!.populateLazily { [unowned self] in
                    // Devices removed since `devices/` was listed have no directory.
                    for device in machine.stillPresent(list) { addDeviceDirectory(device) }
                    addRootBusDirectories(in: dir)
                }
            }
        }
        for device in machine.devices where Self.hostBridge(of: device.sysfsPath) == nil { addDeviceDirectory(device) }
    }

    /// The number of groups, counted again after a membership change (the
    /// link count of `iommu_groups` before it is listed).
    private var groupCount: Int {
        let now = membership.value
        if let known = knownGroupCount.withLock({ $0 }), known.generation == now { return known.count }
        let count = machine.groups.count
        knownGroupCount.withLock { $0 = (now, count) }
        return count
    }

    /// A canonical decimal group id ("0", "17"; not "017" or "+1").
    private static func decimal(_ name: String) -> Int? {
        let utf8 = name.utf8
        guard let first = utf8.first, first >= 48, first <= 57, utf8.count <= 9,
              first != 48 || utf8.count == 1 else { return nil }
        var value = 0
        for byte in utf8 {
            guard byte >= 48, byte <= 57 else { return nil }
            value = value * 10 + Int(byte - 48)
        }
        return value
    }

    /// "pci0000:00" for "devices/pci0000:00/…"; nil for a path elsewhere.
    private static func hostBridge(of path: String) -> Substring? {
        let utf8 = path.utf8
        let prefix = "devices/".utf8
        guard utf8.starts(with: prefix) else { return nil }
        let start = utf8.index(utf8.startIndex, offsetBy: prefix.count)
        guard let end = utf8[start...].firstIndex(of: UInt8(ascii: "/")), end > start else { return nil }
        return path[start..<end]
    }

    /// Paths of the fixed directories, from the sysfs root.
    enum Paths {
        static let iommuGroups = "kernel/iommu_groups"
        static let pciBus = "bus/pci"
        static let pciDevices = "bus/pci/devices"
        static let slots = "bus/pci/slots"
        static let pciBusClass = "class/pci_bus"
        static let iommuClass = "class/iommu"
        /// The built-in acpiphp's module directory (slots link to it).
        static let hotplugDriverModule = "module/acpiphp"
        static let vfioModule = "module/vfio"
        static let devices = "devices"

        static func group(_ id: Int) -> String { iommuGroups + "/" + String(id) }
        static func driver(_ name: String) -> String { pciBus + "/drivers/" + name }
    }

    // MARK: MachineObserver

    public func deviceAdded(_ device: Device) {
        membership.advance()
        addDeviceDirectory(device)
        linkBusEntry(device)
        linkUnit(device)
        if let pf = physicalFunction(of: device) { linkVirtualFunction(device, of: pf) }
        if let group = device.group { linkIntoGroup(device, group) }
        // An IOMMU that is a PCI function (AMD-Vi) has its class device
        // below that function's directory, which a rescan made anew.
        let below = device.sysfsPath + "/"
        for unit in machine.units where unit.sysfsPath.hasPrefix(below) { addUnit(unit) }
    }

    public func deviceJoinedGroup(_ device: Device, _ group: IOMMUGroup) {
        membership.advance()
        linkIntoGroup(device, group)
        if let dir = tree.node(atPath: device.sysfsPath) { tree.makeSymlink("iommu_group", in: dir, to: Paths.group(group.id)) }
    }

    public func deviceLeftGroup(_ device: Device, _ group: IOMMUGroup, released: Bool) {
        membership.advance()
        tree.node(atPath: device.sysfsPath + "/iommu_group").map(tree.remove)
        let path = Paths.group(group.id)
        tree.node(atPath: released ? path : path + "/devices/" + device.address.description).map(tree.remove)
    }

    /// The group's directory (made if it is new) and its `devices/` link
    /// to `device`.
    private func linkIntoGroup(_ device: Device, _ group: IOMMUGroup) {
        guard let groups = tree.node(atPath: Paths.iommuGroups) else { return }
        if groups.directory?.child(named: String(group.id)) == nil {
            addGroup(group)
        } else {
            // A lookup may have made a new group's directory on the spot
            // (before `iommu_groups` was listed), which is not reported.
            tree.reportAdded(String(group.id), in: groups)
        }
        if let devices = tree.node(atPath: Paths.group(group.id) + "/devices") { linkGroupEntry(device, in: devices) }
    }

    public func deviceRemoved(_ device: Device, releasedGroup: IOMMUGroup?) {
        membership.advance()
        let name = device.address.description
        var paths = [device.sysfsPath, Paths.pciDevices + "/" + name] + memberLinks(device, releasedGroup)
        if let pf = physicalFunction(of: device), let index = virtualFunctionIndex(device, of: pf) {
            paths.append(pf.sysfsPath + "/virtfn\(index)")
        }
        for path in paths {
            tree.node(atPath: path).map(tree.remove)
        }
        if let group = releasedGroup { tree.node(atPath: Paths.group(group.id)).map(tree.remove) }
    }

    public func groupReleased(_ group: IOMMUGroup) {
        membership.advance()
        tree.node(atPath: Paths.group(group.id)).map(tree.remove)
    }

    public func driverBound(_ device: Device, _ driver: PCIDriver) { linkDriver(device, driver) }

    public func driverUnbound(_ device: Device, _ driver: PCIDriver) {
        for path in [device.sysfsPath + "/driver", Paths.driver(driver.name) + "/" + device.address.description] {
            tree.node(atPath: path).map(tree.remove)
        }
    }

    // MARK: Building

    /// `/sys/bus/pci/{drivers_probe,rescan,uevent}` (0200).
    private func addBusKnobs() {
        let bus = tree.makeDirectories(Paths.pciBus)
        addUeventKnob(in: bus)
        addBusSettings(in: bus)
        tree.makeAttribute("drivers_probe", in: bus, permissions: 0o200, store: { [machine] buffer, _ in
            guard let device = machine.device(named: buffer) else { return .failure(.noDevice) }
            return machine.probe(device).map { .failure($0) } ?? .success(buffer.count)
        })
        tree.makeAttribute("rescan", in: bus, permissions: 0o200, store: Self.rescanStore { [machine] in machine.rescan() })
    }

    /// A `rescan` file's store: a number, and anything but 0 runs `rescan`.
    static func rescanStore(_ rescan: @escaping @Sendable () -> Void) -> Attribute.Store {
        { buffer, _ in
            guard let value = KernelStrings.unsignedLong(buffer) else { return .failure(.invalidArgument) }
            if value != 0 { rescan() }
            return .success(buffer.count)
        }
    }

    /// `/sys/bus/pci/drivers/<name>/{bind,unbind,new_id,remove_id,uevent}` (0200): registered
    /// drivers have a directory whether or not they drive anything.
    private func addDriver(_ driver: PCIDriver) {
        let dir = tree.makeDirectories(Paths.driver(driver.name))
        dir.directory!.populateLazily { [unowned self] in
            addDriverKnobs(driver, in: dir)
            for device in machine.devices(boundTo: driver) { linkDriverEntry(device, driver) }
        }
    }

    /// The write-only (0200) `uevent` of a bus or driver directory.
    private func addUeventKnob(in dir: Node) {
        let path = dir.path
        tree.makeAttribute("uevent", in: dir, permissions: 0o200, store: { [machine] buffer, _ in
            Uevent.store(buffer, path: path, log: machine.log)
        })
    }

    private func addDriverKnobs(_ driver: PCIDriver, in dir: Node) {
        addUeventKnob(in: dir)
        tree.makeAttribute("bind", in: dir, permissions: 0o200, store: { [machine] buffer, _ in
            guard let device = machine.device(named: buffer) else { return .failure(.noDevice) }
            return machine.attach(driver, to: device).map { .failure($0) } ?? .success(buffer.count)
        })
        tree.makeAttribute("unbind", in: dir, permissions: 0o200, store: { [machine] buffer, _ in
            guard let device = machine.device(named: buffer) else { return .failure(.noDevice) }
            return machine.detach(driver, from: device).map { .failure($0) } ?? .success(buffer.count)
        })
        tree.makeAttribute("new_id", in: dir, permissions: 0o200, store: { [machine] buffer, _ in
            machine.addDynamicID(driver, buffer).map { .failure($0) } ?? .success(buffer.count)
        })
        tree.makeAttribute("remove_id", in: dir, permissions: 0o200, store: { [machine] buffer, _ in
            machine.removeDynamicID(driver, buffer).map { .failure($0) } ?? .success(buffer.count)
        })
    }

    /// `iommu_device_sysfs_add`: the unit's class device with its `devices/`
    /// directory, `subsystem` link and attributes, and the
    /// `class/iommu/<unit>` link.
    private func addUnit(_ unit: IOMMUUnit) {
        let dir = tree.makeDirectories(unit.sysfsPath)
        tree.makeDirectory("devices", in: dir).directory!.populateLazily { [unowned self] in
            for device in machine.devices where device.iommu == unit { linkUnit(device) }
        }
        tree.makeSymlink("subsystem", in: dir, to: Paths.iommuClass)
        addUnitAttributes(unit, in: dir)
        tree.makeSymlink(unit.name, in: tree.node(atPath: Paths.iommuClass)!, to: unit.sysfsPath)
    }

    /// The device's directory; its attributes, knobs and links are made
    /// when it is first used.
    private func addDeviceDirectory(_ device: Device) {
        let dir = tree.makeDirectories(device.sysfsPath)
        dir.directory!.populateLazily { [unowned self] in populateDevice(device, in: dir) }
    }

    /// The identity attributes, the knobs and the links of a device's
    /// directory, from the device's state now.
    private func populateDevice(_ device: Device, in dir: Node) {
        constantAttribute("vendor", in: dir, "0x" + hexDigits(device.vendorID, 4) + "\n")
        constantAttribute("device", in: dir, "0x" + hexDigits(device.deviceID, 4) + "\n")
        constantAttribute("class", in: dir, "0x" + hexDigits(device.classCode, 6) + "\n")
        addDeviceKnobs(device, in: dir)
        addPCIAttributes(device, in: dir)
        tree.makeSymlink("subsystem", in: dir, to: Paths.pciBus)
        // iommu_device_link(): before the device joins a group.
        if let unit = device.iommu { tree.makeSymlink("iommu", in: dir, to: unit.sysfsPath) }
        if let group = device.group { tree.makeSymlink("iommu_group", in: dir, to: Paths.group(group.id)) }
        if let driver = device.driver { tree.makeSymlink("driver", in: dir, to: Paths.driver(driver.name)) }
        if let pf = physicalFunction(of: device) { tree.makeSymlink("physfn", in: dir, to: pf.sysfsPath) }
        addSecondaryBusDirectory(of: device, in: dir)
        if device.sriov != nil {
            for vf in machine.devices where vf.physicalFunction == device.address {
                if let index = virtualFunctionIndex(vf, of: device) { tree.makeSymlink("virtfn\(index)", in: dir, to: vf.sysfsPath) }
            }
        }
    }

    /// `bus/pci/devices/<dev>`.
    private func linkBusEntry(_ device: Device) {
        guard let dir = tree.node(atPath: Paths.pciDevices) else { return }
        tree.makeSymlink(device.address.description, in: dir, to: device.sysfsPath)
    }

    /// The unit's `devices/<dev>` back link.
    private func linkUnit(_ device: Device) {
        guard let unit = device.iommu, let dir = tree.node(atPath: unit.sysfsPath + "/devices") else { return }
        tree.makeSymlink(device.address.description, in: dir, to: device.sysfsPath)
    }

    /// `driver_override` (0644), `remove` (0220), `rescan` (0200) and, when
    /// the device has a reset method, `reset` (0200) and `reset_method` (0644).
    private func addDeviceKnobs(_ device: Device, in dir: Node) {
        tree.makeAttribute("driver_override", in: dir, permissions: 0o644, .deviceKnob(driverOverrideKnob, device))
        // VFs come and go with sriov_numvfs only: no `remove`, no `rescan`.
        if device.physicalFunction == nil {
            tree.makeAttribute("remove", in: dir, permissions: 0o220, .deviceKnob(removeKnob, device))
            tree.makeAttribute("rescan", in: dir, permissions: 0o200,
                               store: Self.rescanStore { [machine] in machine.rescan(busOf: device) })
        }
        if let sriov = device.sriov { addSRIOVAttributes(device, sriov, in: dir) }
        guard !device.resetMethods.isEmpty else { return }
        tree.makeAttribute("reset", in: dir, permissions: 0o200, store: { [machine] buffer, _ in
            guard KernelStrings.unsignedLong(buffer) == 1 else { return .failure(.invalidArgument) }
            return machine.reset(device).map { .failure($0) } ?? .success(buffer.count)
        })
        tree.makeAttribute("reset_method", in: dir, permissions: 0o644,
                           show: {
                               let methods = device.activeResetMethods
                               return .success(methods.isEmpty ? [] : Array((methods.joined(separator: " ") + "\n").utf8))
                           },
                           store: { [machine] buffer, _ in
                               machine.setResetMethods(device, buffer).map { .failure($0) } ?? .success(buffer.count)
                           })
    }

    /// A PF's `sriov_*` files (`drivers/pci/iov.c`).
    private func addSRIOVAttributes(_ pf: Device, _ sriov: MachineSpec.SRIOVSpec, in dir: Node) {
        constantAttribute("sriov_totalvfs", in: dir, "\(sriov.totalVFs)\n")
        constantAttribute("sriov_offset", in: dir, "\(sriov.offset)\n")
        constantAttribute("sriov_stride", in: dir, "\(sriov.stride)\n")
        constantAttribute("sriov_vf_device", in: dir, String(sriov.vfDeviceID, radix: 16) + "\n")
        tree.makeAttribute("sriov_numvfs", in: dir, permissions: 0o644,
                           show: { .success(Array("\(pf.virtualFunctions.count)\n".utf8)) },
                           store: { [machine] buffer, _ in
                               // kstrtou16: anything that is not a 16-bit number is EINVAL here.
                               guard let n = KernelStrings.unsignedLong(buffer), n <= 0xffff else { return .failure(.invalidArgument) }
                               return machine.setNumberOfVFs(pf, Int(n)).map { .failure($0) } ?? .success(buffer.count)
                           })
        tree.makeAttribute("sriov_drivers_autoprobe", in: dir, permissions: 0o644,
                           show: { .success(Array((pf.driversAutoprobe ? "1\n" : "0\n").utf8)) },
                           store: { [machine] buffer, _ in
                               guard let on = KernelStrings.bool(buffer) else { return .failure(.invalidArgument) }
                               machine.setDriversAutoprobe(pf, on)
                               return .success(buffer.count)
                           })
    }

    /// The PF of a VF.
    private func physicalFunction(of vf: Device) -> Device? {
        vf.physicalFunction.flatMap { machine.device(at: $0) }
    }

    /// The PF's `virtfn<N>` link to a new VF.
    private func linkVirtualFunction(_ vf: Device, of pf: Device) {
        guard let index = virtualFunctionIndex(vf, of: pf), let dir = tree.node(atPath: pf.sysfsPath) else { return }
        tree.makeSymlink("virtfn\(index)", in: dir, to: vf.sysfsPath)
    }

    /// A VF's index, from the routing ids (offset and stride of the PF).
    private func virtualFunctionIndex(_ vf: Device, of pf: Device) -> Int? {
        guard let sriov = pf.sriov, sriov.stride > 0 else { return nil }
        func rid(_ a: PCIAddress) -> Int { Int(a.bus) << 8 | Int(a.device) << 3 | Int(a.function) }
        return (rid(vf.address) - rid(pf.address) - sriov.offset) / sriov.stride
    }

    /// `iommu_group_alloc`: the group directory with `devices/`,
    /// `reserved_regions`, `type` (and `name` when set), made on first use.
    private func addGroup(_ group: IOMMUGroup) {
        let groups = tree.node(atPath: Paths.iommuGroups)!
        // Made already by a lookup (or a hot-plug) before the listing.
        if groups.directory!.child(named: String(group.id)) != nil { return }
        let dir = tree.makeDirectory(String(group.id), in: groups)
        dir.directory!.populateLazily { [unowned self] in
            let devices = tree.makeDirectory("devices", in: dir)
            devices.directory!.populateLazily { [unowned self] in
                for device in group.members { linkGroupEntry(device, in: devices) }
            }
            tree.makeAttribute("reserved_regions", in: dir, permissions: 0o444,
                               .groupReservedRegions(ReservedRegionsFile(group: group, generation: membership)))
            tree.makeAttribute("type", in: dir, permissions: 0o644, .groupType(group))
            if let name = group.name { constantAttribute("name", in: dir, name + "\n") }
        }
    }

    /// `iommu_group_add_device`: the group's `devices/<dev>` link (the
    /// device's `iommu_group` link is part of its directory).
    private func linkGroupEntry(_ device: Device, in devices: Node) {
        tree.makeSymlink(device.address.description, in: devices, to: device.sysfsPath)
    }

    /// The links a removed device leaves behind outside its own directory:
    /// its unit's back link and, unless the whole group goes, its group link.
    private func memberLinks(_ device: Device, _ releasedGroup: IOMMUGroup?) -> [String] {
        var paths: [String] = []
        if let unit = device.unit { paths.append(unit.sysfsPath + "/devices/" + device.address.description) }
        if releasedGroup == nil, let id = groupID(of: device) {
            paths.append(Paths.group(id) + "/devices/" + device.address.description)
        }
        return paths
    }

    /// The group id a device's `iommu_group` link still names.
    private func groupID(of device: Device) -> Int? {
        guard let link = tree.node(atPath: device.sysfsPath + "/iommu_group")?.symlink else { return nil }
        return link.targetPath.split(separator: "/").last.flatMap { Int($0) }
    }

    /// The device's `driver` link and the driver's link to the device.
    private func linkDriver(_ device: Device, _ driver: PCIDriver) {
        linkDriverEntry(device, driver)
        guard let dir = tree.node(atPath: device.sysfsPath) else { return }
        tree.makeSymlink("driver", in: dir, to: Paths.driver(driver.name))
    }

    /// `bus/pci/drivers/<driver>/<dev>`.
    private func linkDriverEntry(_ device: Device, _ driver: PCIDriver) {
        guard let dir = tree.node(atPath: Paths.driver(driver.name)) else { return }
        tree.makeSymlink(device.address.description, in: dir, to: device.sysfsPath)
    }

    /// A read-only (0444) attribute whose text never changes.
    func constantAttribute(_ name: String, in dir: Node, _ text: String) {
        tree.makeAttribute(name, in: dir, permissions: 0o444, .constant(text))
    }
}
