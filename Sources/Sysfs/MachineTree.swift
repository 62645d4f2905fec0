import IOMMUCore
import SystemPackage

/// The sysfs view of a `Machine`: the nodes a real kernel creates for its
/// IOMMU units, PCI devices, drivers and groups, kept in step with the
/// machine as devices come and go and drivers bind.
public final class MachineTree: MachineObserver {
    public let machine: Machine
    public let tree: SysfsTree

    public init(machine: Machine) {
        self.machine = machine
        self.tree = SysfsTree()
        // Created at core_initcall whenever CONFIG_IOMMU_API=y, even empty.
        tree.makeDirectories(Paths.iommuGroups)
        tree.makeDirectories(Paths.pciDevices)
        tree.makeDirectories(Paths.iommuClass)
        addBusKnobs()
        for driver in machine.drivers.values.sorted(by: { $0.name < $1.name }) { addDriver(driver) }
        for unit in machine.units { addUnit(unit) }
        for device in machine.devices { addDevice(device) }
        for group in machine.groups {
            addGroup(group)
            for address in group.snapshot.devices { machine.device(at: address).map { linkMember($0, group) } }
        }
        for device in machine.devices { device.driver.map { linkDriver(device, $0) } }
        machine.setObserver(self)
    }

    /// Paths of the fixed directories, from the sysfs root.
    enum Paths {
        static let iommuGroups = "kernel/iommu_groups"
        static let pciBus = "bus/pci"
        static let pciDevices = "bus/pci/devices"
        static let iommuClass = "class/iommu"

        static func group(_ id: Int) -> String { iommuGroups + "/" + String(id) }
        static func driver(_ name: String) -> String { pciBus + "/drivers/" + name }
    }

    // MARK: MachineObserver

    public func deviceAdded(_ device: Device) {
        addDevice(device)
        linkPhysicalFunction(device)
        guard let group = device.group else { return }
        if tree.node(atPath: Paths.group(group.id)) == nil { addGroup(group) }
        linkMember(device, group)
    }

    public func deviceRemoved(_ device: Device, releasedGroup: IOMMUGroup?) {
        let name = device.address.description
        var paths = [device.sysfsPath, Paths.pciDevices + "/" + name] + memberLinks(device, releasedGroup)
        if let (pf, index) = virtualFunctionIndex(device) { paths.append(pf.sysfsPath + "/virtfn\(index)") }
        for path in paths {
            tree.node(atPath: path).map(tree.remove)
        }
        if let group = releasedGroup { tree.node(atPath: Paths.group(group.id)).map(tree.remove) }
    }

    public func driverBound(_ device: Device, _ driver: PCIDriver) { linkDriver(device, driver) }

    public func driverUnbound(_ device: Device, _ driver: PCIDriver) {
        for path in [device.sysfsPath + "/driver", Paths.driver(driver.name) + "/" + device.address.description] {
            tree.node(atPath: path).map(tree.remove)
        }
    }

    // MARK: Building

    /// `/sys/bus/pci/{drivers_probe,rescan}` (0200).
    private func addBusKnobs() {
        let bus = tree.makeDirectories(Paths.pciBus)
        tree.makeAttribute("drivers_probe", in: bus, permissions: 0o200, store: { [machine] buffer, _ in
            guard let device = machine.device(named: buffer) else { return .failure(.noDevice) }
            return machine.probe(device).map { .failure($0) } ?? .success(buffer.count)
        })
        tree.makeAttribute("rescan", in: bus, permissions: 0o200, store: { [machine] buffer, _ in
            guard let value = KernelStrings.unsignedLong(buffer) else { return .failure(.invalidArgument) }
            if value != 0 { machine.rescan() }
            return .success(buffer.count)
        })
    }

    /// `/sys/bus/pci/drivers/<name>/{bind,unbind,new_id,remove_id}` (0200): registered
    /// drivers have a directory whether or not they drive anything.
    private func addDriver(_ driver: PCIDriver) {
        let dir = tree.makeDirectories(Paths.driver(driver.name))
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
    /// directory and `subsystem` link, and the `class/iommu/<unit>` link.
    private func addUnit(_ unit: IOMMUUnit) {
        let dir = tree.makeDirectories(unit.sysfsPath)
        tree.makeDirectory("devices", in: dir)
        tree.makeSymlink("subsystem", in: dir, to: Paths.iommuClass)
        tree.makeSymlink(unit.name, in: tree.node(atPath: Paths.iommuClass)!, to: unit.sysfsPath)
    }

    /// The device's directory with its attributes, knobs and links, its
    /// `bus/pci/devices` entry and its unit's back link.
    private func addDevice(_ device: Device) {
        let dir = tree.makeDirectories(device.sysfsPath)
        constantAttribute("vendor", in: dir, "0x" + hexDigits(device.vendorID, 4) + "\n")
        constantAttribute("device", in: dir, "0x" + hexDigits(device.deviceID, 4) + "\n")
        constantAttribute("class", in: dir, "0x" + hexDigits(device.classCode, 6) + "\n")
        addDeviceKnobs(device, in: dir)
        tree.makeSymlink("subsystem", in: dir, to: Paths.pciBus)
        tree.makeSymlink(device.address.description, in: tree.node(atPath: Paths.pciDevices)!, to: device.sysfsPath)
        if let unit = device.unit {
            // iommu_device_link(): both directions, before the device joins a group.
            tree.makeSymlink("iommu", in: dir, to: unit.sysfsPath)
            tree.makeSymlink(device.address.description,
                             in: tree.node(atPath: unit.sysfsPath + "/devices")!, to: device.sysfsPath)
        }
    }

    /// `driver_override` (0644), `remove` (0220) and, when the device has a
    /// reset method, `reset` (0200) and `reset_method` (0644).
    private func addDeviceKnobs(_ device: Device, in dir: Node) {
        tree.makeAttribute("driver_override", in: dir, permissions: 0o644,
                           show: { .success(Array(((device.driverOverride ?? "(null)") + "\n").utf8)) },
                           store: { [machine] buffer, _ in
                               machine.setDriverOverride(device, buffer).map { .failure($0) } ?? .success(buffer.count)
                           })
        // VFs come and go with sriov_numvfs only: no `remove`.
        if device.physicalFunction == nil {
            tree.makeAttribute("remove", in: dir, permissions: 0o220, store: { [machine] buffer, _ in
                guard let value = KernelStrings.unsignedLong(buffer) else { return .failure(.invalidArgument) }
                if value != 0 { machine.remove(device) }
                return .success(buffer.count)
            })
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

    /// A VF's `physfn` link and its PF's `virtfn<N>` link.
    private func linkPhysicalFunction(_ device: Device) {
        guard let (pf, index) = virtualFunctionIndex(device),
              let vfDir = tree.node(atPath: device.sysfsPath), let pfDir = tree.node(atPath: pf.sysfsPath) else { return }
        tree.makeSymlink("physfn", in: vfDir, to: pf.sysfsPath)
        tree.makeSymlink("virtfn\(index)", in: pfDir, to: device.sysfsPath)
    }

    /// For a VF: its PF and its VF index, from the routing ids.
    private func virtualFunctionIndex(_ vf: Device) -> (Device, Int)? {
        guard let pfAddress = vf.physicalFunction, let pf = machine.device(at: pfAddress),
              let sriov = pf.sriov, sriov.stride > 0 else { return nil }
        func rid(_ a: PCIAddress) -> Int { Int(a.bus) << 8 | Int(a.device) << 3 | Int(a.function) }
        return (pf, (rid(vf.address) - rid(pfAddress) - sriov.offset) / sriov.stride)
    }

    /// `iommu_group_alloc`: the group directory with `devices/`,
    /// `reserved_regions`, `type` (and `name` when set).
    private func addGroup(_ group: IOMMUGroup) {
        let dir = tree.makeDirectory(String(group.id), in: tree.node(atPath: Paths.iommuGroups)!)
        tree.makeDirectory("devices", in: dir)
        tree.makeAttribute("reserved_regions", in: dir, permissions: 0o444,
                           show: { .success(Array(group.reservedRegionsText.utf8)) })
        tree.makeAttribute("type", in: dir, permissions: 0o644,
                           show: { .success(Array(group.typeText.utf8)) },
                           store: { buffer, caller in group.storeType(buffer, caller: caller) })
        if let name = group.name {
            constantAttribute("name", in: dir, name + "\n")
        }
    }

    /// `iommu_group_add_device`: the group's `devices/<dev>` link and the
    /// device's `iommu_group` link.
    private func linkMember(_ device: Device, _ group: IOMMUGroup) {
        guard let devices = tree.node(atPath: Paths.group(group.id) + "/devices"),
              let deviceDir = tree.node(atPath: device.sysfsPath) else { return }
        tree.makeSymlink(device.address.description, in: devices, to: device.sysfsPath)
        tree.makeSymlink("iommu_group", in: deviceDir, to: Paths.group(group.id))
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
        return link.target.split(separator: "/").last.flatMap { Int($0) }
    }

    /// The device's `driver` link and the driver's link to the device.
    private func linkDriver(_ device: Device, _ driver: PCIDriver) {
        guard let dir = tree.node(atPath: device.sysfsPath),
              let driverDir = tree.node(atPath: Paths.driver(driver.name)) else { return }
        tree.makeSymlink(device.address.description, in: driverDir, to: device.sysfsPath)
        tree.makeSymlink("driver", in: dir, to: Paths.driver(driver.name))
    }

    /// A read-only (0444) attribute whose text never changes.
    private func constantAttribute(_ name: String, in dir: Node, _ text: String) {
        let bytes = Array(text.utf8)
        tree.makeAttribute(name, in: dir, permissions: 0o444, show: { .success(bytes) })
    }
}
