import IOMMUCore
import SystemPackage

/// The sysfs view of a `Machine`: the nodes a real kernel would create for
/// its IOMMU units, PCI devices, drivers and groups.
public final class MachineTree: Sendable {
    public let machine: Machine
    public let tree: SysfsTree

    public init(machine: Machine) {
        self.machine = machine
        self.tree = SysfsTree()
        // Created at core_initcall whenever CONFIG_IOMMU_API=y, even empty.
        tree.makeDirectories(Paths.iommuGroups)
        tree.makeDirectories(Paths.pciDevices)
        tree.makeDirectories(Paths.pciDrivers)
        tree.makeDirectories(Paths.iommuClass)
        for unit in machine.units { addUnit(unit) }
        for device in machine.devices { addDevice(device) }
        for group in machine.groups { addGroup(group) }
    }

    /// Paths of the fixed directories, from the sysfs root.
    enum Paths {
        static let iommuGroups = "kernel/iommu_groups"
        static let pciDevices = "bus/pci/devices"
        static let pciDrivers = "bus/pci/drivers"
        static let iommuClass = "class/iommu"

        static func group(_ id: Int) -> String { iommuGroups + "/" + String(id) }
        static func driver(_ name: String) -> String { pciDrivers + "/" + name }
    }

    /// `iommu_device_sysfs_add`: the unit's class device with its `devices/`
    /// directory and `subsystem` link, and the `class/iommu/<unit>` link.
    private func addUnit(_ unit: IOMMUUnit) {
        let dir = tree.makeDirectories(unit.sysfsPath)
        tree.makeDirectory("devices", in: dir)
        tree.makeSymlink("subsystem", in: dir, to: Paths.iommuClass)
        tree.makeSymlink(unit.name, in: tree.node(atPath: Paths.iommuClass)!, to: unit.sysfsPath)
    }

    /// The device's directory with its identity attributes and links, its
    /// `bus/pci/devices` entry, its unit's back link and its driver's link.
    private func addDevice(_ device: Device) {
        let dir = tree.makeDirectories(device.sysfsPath)
        constantAttribute("vendor", in: dir, "0x" + hexDigits(device.vendorID, 4) + "\n")
        constantAttribute("device", in: dir, "0x" + hexDigits(device.deviceID, 4) + "\n")
        constantAttribute("class", in: dir, "0x" + hexDigits(device.classCode, 6) + "\n")
        tree.makeSymlink("subsystem", in: dir, to: "bus/pci")
        tree.makeSymlink(device.address.description, in: tree.node(atPath: Paths.pciDevices)!, to: device.sysfsPath)
        if let unit = device.unit {
            // iommu_device_link(): both directions, before the device joins a group.
            tree.makeSymlink("iommu", in: dir, to: unit.sysfsPath)
            tree.makeSymlink(device.address.description,
                             in: tree.node(atPath: unit.sysfsPath + "/devices")!, to: device.sysfsPath)
        }
        if let driver = device.driver {
            let driverDir = tree.makeDirectories(Paths.driver(driver.name))
            tree.makeSymlink(device.address.description, in: driverDir, to: device.sysfsPath)
            tree.makeSymlink("driver", in: dir, to: Paths.driver(driver.name))
        }
    }

    /// `iommu_group_alloc` + `iommu_group_add_device`: the group directory
    /// with `devices/`, `reserved_regions`, `type` (and `name` when set),
    /// then a link per member both ways.
    private func addGroup(_ group: IOMMUGroup) {
        let path = Paths.group(group.id)
        let dir = tree.makeDirectory(String(group.id), in: tree.node(atPath: Paths.iommuGroups)!)
        let devices = tree.makeDirectory("devices", in: dir)
        tree.makeAttribute("reserved_regions", in: dir, permissions: 0o444,
                           show: { .success(Array(group.reservedRegionsText.utf8)) })
        tree.makeAttribute("type", in: dir, permissions: 0o644,
                           show: { .success(Array(group.typeText.utf8)) },
                           store: { buffer, caller in group.storeType(buffer, caller: caller) })
        if let name = group.name {
            constantAttribute("name", in: dir, name + "\n")
        }
        for address in group.snapshot.devices {
            guard let device = machine.device(at: address),
                  let deviceDir = tree.node(atPath: device.sysfsPath) else { continue }
            tree.makeSymlink(address.description, in: devices, to: device.sysfsPath)
            tree.makeSymlink("iommu_group", in: deviceDir, to: path)
        }
    }

    /// A read-only (0444) attribute whose text never changes.
    private func constantAttribute(_ name: String, in dir: Node, _ text: String) {
        let bytes = Array(text.utf8)
        tree.makeAttribute(name, in: dir, permissions: 0o444, show: { .success(bytes) })
    }
}

