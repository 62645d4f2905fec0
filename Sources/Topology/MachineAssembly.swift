import IOMMUCore

/// The checks that span objects (unique names and addresses, references that
/// must resolve, the bridge tree, groups within one unit), then the
/// `MachineSpec`. Each check walks the document in order, so it reports the
/// earliest offender; everything `Machine(spec:)` would refuse is caught
/// here, with a path into the document.
struct MachineAssembly {
    let boot: BootOptions
    let units: [UnitEntry]
    let drivers: [PCIDriver]
    let devices: [MachineSpec.DeviceSpec]

    func spec() throws(Problem) -> MachineSpec {
        let unitsByName = try indexUnits()
        let driverTable = try driverTable()
        let deviceIndex = try indexDevices()
        let parents = try resolveParents(deviceIndex)
        try checkBuses()
        try checkCycles(parents)
        try checkUnitsAndGroups(unitsByName)

        var resolvedUnits: [IOMMUUnit] = []
        for (index, unit) in units.enumerated() {
            resolvedUnits.append(IOMMUUnit(name: unit.name, abilities: unit.abilities,
                                           sysfsPath: try sysfsPath(of: unit, at: index, deviceIndex, parents),
                                           registers: unit.registers))
        }
        var specs = devices
        for index in specs.indices {
            guard let name = specs[index].unit, let unit = unitsByName[name] else { continue }
            // A device without regions of its own shares its unit's array:
            // most devices of a big machine, and an array each adds up.
            if specs[index].reservedRegions.isEmpty {
                specs[index].reservedRegions = units[unit].reservedRegions
            } else {
                specs[index].reservedRegions += units[unit].reservedRegions
            }
        }
        return MachineSpec(boot: boot, units: resolvedUnits, drivers: driverTable, devices: specs)
    }

    /// Unit index by name; names must be unique (they are sysfs directories).
    private func indexUnits() throws(Problem) -> [String: Int] {
        var index: [String: Int] = [:]
        for (position, unit) in units.enumerated() {
            if let first = index.updateValue(position, forKey: unit.name) {
                throw Problem(quoted(unit.name) + " is already the name of iommu_units[\(first)]",
                              at: .key(RootKey.iommuUnits.rawValue), .index(position), .key(UnitKey.name.rawValue))
            }
        }
        return index
    }

    /// Device index by address; an address may be listed once.
    private func indexDevices() throws(Problem) -> [PCIAddress: Int] {
        var index: [PCIAddress: Int] = [:]
        index.reserveCapacity(devices.count)
        for (position, device) in devices.enumerated() {
            if let first = index.updateValue(position, forKey: device.address) {
                throw problem(position, .address, "\(device.address) is already listed as devices[\(first)]")
            }
        }
        return index
    }

    /// Each device's parent index, checking that the parent is a listed
    /// bridge in the same PCI domain.
    private func resolveParents(_ deviceIndex: [PCIAddress: Int]) throws(Problem) -> [Int?] {
        var parents: [Int?] = []
        parents.reserveCapacity(devices.count)
        for (position, device) in devices.enumerated() {
            guard let parent = device.parent else {
                parents.append(nil)
                continue
            }
            guard let parentIndex = deviceIndex[parent] else {
                throw problem(position, .parent, "\(parent) is not a listed device")
            }
            let classCode = devices[parentIndex].classCode
            guard Self.bridgeClasses.contains(classCode >> 8) else {
                throw problem(position, .parent, "\(parent) is not a PCI bridge (its class is \(hexLiteral(classCode, digits: 6)); "
                              + "a bridge's is 0x0604xx, 0x0607xx or 0x0609xx)")
            }
            guard parent.domain == device.address.domain else {
                throw problem(position, .parent, "\(parent) is in another PCI domain than \(device.address)")
            }
            parents.append(parentIndex)
        }
        return parents
    }

    /// Class codes (without the programming interface) of bridges that have
    /// a secondary bus: PCI-to-PCI, CardBus, semi-transparent PCI-to-PCI.
    private static let bridgeClasses: Set<UInt32> = [0x0604, 0x0607, 0x0609]

    /// A bus has one upstream: the root, or one bridge. Devices that share a
    /// bus number must therefore share a parent, and a device cannot sit on
    /// its bridge's own bus.
    private func checkBuses() throws(Problem) {
        var upstream: [UInt32: (bridge: PCIAddress?, declaredBy: Int)] = [:]
        for (position, device) in devices.enumerated() {
            let bus = UInt32(device.address.domain) << 8 | UInt32(device.address.bus)
            guard let known = upstream[bus] else {
                upstream[bus] = (device.parent, position)
                continue
            }
            guard known.bridge != device.parent else { continue }
            let busName = device.address.description.prefix(7)
            throw problem(position, .parent, "bus \(busName) is behind \(Self.describe(known.bridge)) "
                          + "(as devices[\(known.declaredBy)] says), not \(Self.describe(device.parent))")
        }
    }

    private static func describe(_ bridge: PCIAddress?) -> String {
        bridge.map(\.description) ?? "the root"
    }

    /// Following parents must reach the root. Each device is walked once:
    /// a walk stops at a device already known to reach the root.
    private func checkCycles(_ parents: [Int?]) throws(Problem) {
        enum Mark { case unvisited, onWalk, reachesRoot }
        var marks = [Mark](repeating: .unvisited, count: devices.count)
        for start in devices.indices {
            var walk: [Int] = []
            var current: Int? = start
            while let index = current, marks[index] == .unvisited {
                marks[index] = .onWalk
                walk.append(index)
                current = parents[index]
            }
            if let repeated = current, marks[repeated] == .onWalk {
                let cycle = walk[walk.firstIndex(of: repeated)!...].map { devices[$0].address.description }
                throw problem(repeated, .parent, "the bridges form a cycle: "
                              + (cycle + [devices[repeated].address.description]).joined(separator: " -> "))
            }
            for index in walk { marks[index] = .reachesRoot }
        }
    }

    /// Units must be declared, and a group's members must share a unit (or
    /// all have none): one group is one set of translation tables.
    private func checkUnitsAndGroups(_ unitsByName: [String: Int]) throws(Problem) {
        var firstMember: [String: Int] = [:]
        firstMember.reserveCapacity(devices.count)
        for (position, device) in devices.enumerated() {
            if let name = device.unit, unitsByName[name] == nil {
                let known = units.isEmpty ? "no units are declared" : "units: " + units.map(\.name).joined(separator: ", ")
                throw problem(position, .iommu, "unknown IOMMU unit \(quoted(name)) (\(known))")
            }
            guard let first = firstMember[device.group] else {
                firstMember[device.group] = position
                continue
            }
            let other = devices[first]
            guard other.unit != device.unit else { continue }
            throw problem(position, .group, "group \(quoted(device.group)) spans IOMMU units: \(other.address) "
                          + "(devices[\(first)]) is behind \(Self.describe(unit: other.unit)), "
                          + "\(device.address) behind \(Self.describe(unit: device.unit))")
        }
    }

    private static func describe(unit: String?) -> String {
        unit ?? "no IOMMU"
    }

    /// Where the unit's class device lives under the sysfs root (see
    /// `IOMMUUnit.sysfsPath`): Intel units are virtual devices, AMD units
    /// sit under their own PCI function.
    private func sysfsPath(of unit: UnitEntry, at position: Int,
                           _ deviceIndex: [PCIAddress: Int], _ parents: [Int?]) throws(Problem) -> String {
        guard let function = unit.pciFunction else { return "devices/virtual/iommu/" + unit.name }
        guard var index = deviceIndex[function] else {
            throw Problem("\(function) is not a listed device",
                          at: .key(RootKey.iommuUnits.rawValue), .index(position), .key(UnitKey.pciFunction.rawValue))
        }
        var chain = [function.description]
        while let parent = parents[index] {
            index = parent
            chain.append(devices[index].address.description)
        }
        let rootBus = devices[index].address.rootBusName
        return (["devices", rootBus] + chain.reversed() + ["iommu", unit.name]).joined(separator: "/")
    }

    /// Every driver a device may be bound to: the DMA-managing drivers the
    /// kernel predeclares, then the document's declarations (which override
    /// them), then any other name a device uses, as a normal driver.
    /// Sorted by name, so the table does not depend on document order.
    private func driverTable() throws(Problem) -> [PCIDriver] {
        var table: [String: PCIDriver] = [:]
        for name in PCIDriver.dmaManagingNames { table[name] = PCIDriver(name: name, managesDMA: true) }
        var declaredAt: [String: Int] = [:]
        for (position, driver) in drivers.enumerated() {
            if let first = declaredAt.updateValue(position, forKey: driver.name) {
                throw Problem("\(quoted(driver.name)) is already declared by drivers[\(first)]",
                              at: .key(RootKey.drivers.rawValue), .index(position), .key(DriverKey.name.rawValue))
            }
            table[driver.name] = driver
        }
        // Drivers only named by devices manage no DMA. (No array per device:
        // a big machine has 100,000.)
        func declare(_ name: String?) {
            if let name, table[name] == nil { table[name] = PCIDriver(name: name, managesDMA: false) }
        }
        for device in devices {
            declare(device.driver)
            declare(device.nativeDriver)
            declare(device.sriov?.vfDriver)
        }
        return table.values.sorted { $0.name < $1.name }
    }

    private func problem(_ position: Int, _ key: DeviceKey, _ reason: String) -> Problem {
        Problem(reason, at: .key(RootKey.devices.rawValue), .index(position), .key(key.rawValue))
    }
}
