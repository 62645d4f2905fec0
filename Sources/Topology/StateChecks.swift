import IOMMUCore

/// The checks of a `state` section that span objects or refer to the
/// description (unique ids and addresses, drivers that exist, knobs only
/// where the device has them), before anything boots; each reports the
/// earliest offender with its path. What the kernel logic decides (can
/// this type be set, may this group be claimed) is found out by restoring.
struct StateChecks {
    let spec: MachineSpec
    let state: MachineState
    private let described: [PCIAddress: MachineSpec.DeviceSpec]

    init(spec: MachineSpec, state: MachineState) {
        self.spec = spec
        self.state = state
        self.described = Dictionary(spec.devices.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Runs every check and returns the group ids to boot with
    /// (`MachineSpec.groupIDs`): each state group's id for every device of
    /// the description that has the group's label (removed members too, as
    /// whichever probes first creates the group), and for each member the
    /// description does not have (a VF).
    func groupIDs() throws(Problem) -> [PCIAddress: Int] {
        try checkDevices()
        try checkDrivers()
        try checkContainers()
        try checkContexts()
        return try groupIDsByDevice()
    }

    /// Described functions other than 0 without the multifunction bit that
    /// the state lists in a group of their own while their label's group
    /// exists: a rescan regrouped them (see `Machine.join`), and the
    /// restore re-adds them so.
    static func regroupedFunctions(_ spec: MachineSpec, _ state: MachineState) -> Set<PCIAddress> {
        let described = Dictionary(spec.devices.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        func canRegroup(_ address: PCIAddress) -> Bool {
            described[address].map { $0.address.function > 0 && !$0.multifunction } ?? false
        }
        var regrouped: Set<PCIAddress> = []
        for group in state.groups where group.devices.count == 1 && canRegroup(group.devices[0]) {
            let label = described[group.devices[0]]!.group
            let shared = state.groups.contains { other in
                other.id != group.id && other.devices.contains { described[$0]?.group == label }
            }
            if shared { regrouped.insert(group.devices[0]) }
        }
        return regrouped
    }

    private func groupIDsByDevice() throws(Problem) -> [PCIAddress: Int] {
        let regrouped = Self.regroupedFunctions(spec, state)
        var labelGroup: [String: Int] = [:]
        var addressGroup: [PCIAddress: Int] = [:]
        var idGroup: [Int: Int] = [:]
        for (index, group) in state.groups.enumerated() {
            if let first = idGroup.updateValue(index, forKey: group.id) {
                throw Problem.inState("id \(group.id) is already the id of state.groups[\(first)]",
                                      .key(StateKey.groups.rawValue), .index(index), .key(GroupStateKey.id.rawValue))
            }
            for (position, address) in group.devices.enumerated() {
                let path: [Problem.Step] = [.key(StateKey.groups.rawValue), .index(index),
                                            .key(GroupStateKey.devices.rawValue), .index(position)]
                if let first = addressGroup.updateValue(index, forKey: address) {
                    throw Problem.inState("\(address) is already listed in state.groups[\(first)]", path)
                }
                guard let label = described[address]?.group, !regrouped.contains(address) else { continue }
                if let other = labelGroup.updateValue(index, forKey: label), other != index {
                    throw Problem.inState("\(address) shares the group label \(quoted(label)) with a device of "
                                          + "state.groups[\(other)]: one label is one group", path)
                }
            }
        }
        let listed = Set(state.devices.map(\.address))
        for (index, group) in state.groups.enumerated() {
            if let position = group.devices.firstIndex(where: { !listed.contains($0) }) {
                throw Problem.inState("\(group.devices[position]) is not in state.devices", .key(StateKey.groups.rawValue),
                                      .index(index), .key(GroupStateKey.devices.rawValue), .index(position))
            }
        }
        // A device may be in no group: no IOMMU translates it (and vfio-pci
        // made it no no-IOMMU group), or its IOMMU probe failed at hot-plug;
        // the restore judges whether the profile's kernel gets there.
        var ids: [PCIAddress: Int] = [:]
        for device in spec.devices {
            if let index = labelGroup[device.group] { ids[device.address] = state.groups[index].id }
        }
        for (address, index) in addressGroup where described[address] == nil || regrouped.contains(address) {
            ids[address] = state.groups[index].id
        }
        return ids
    }

    private func checkDevices() throws(Problem) {
        let drivers = Set(spec.drivers.map(\.name))
        var seen: [PCIAddress: Int] = [:]
        for (index, device) in state.devices.enumerated() {
            func problem(_ key: DeviceStateKey, _ reason: String) -> Problem {
                Problem.inState(reason, .key(StateKey.devices.rawValue), .index(index), .key(key.rawValue))
            }
            if let first = seen.updateValue(index, forKey: device.address) {
                throw problem(.address, "\(device.address) is already listed as state.devices[\(first)]")
            }
            if let driver = device.driver, !drivers.contains(driver) {
                throw problem(.driver, "unknown driver \(quoted(driver)) (the description's drivers: "
                              + spec.drivers.map(\.name).joined(separator: ", ") + ")")
            }
            let entry = described[device.address]
            if device.numVFs > 0 {
                guard let sriov = entry?.sriov else { throw problem(.numVFs, "\(device.address) is not an SR-IOV PF of the description") }
                guard device.numVFs <= sriov.totalVFs else {
                    throw problem(.numVFs, "\(device.numVFs) is more than the PF's total_vfs (\(sriov.totalVFs))")
                }
            }
            if device.driversAutoprobe != nil, entry?.sriov == nil {
                throw problem(.driversAutoprobe, "\(device.address) is not an SR-IOV PF of the description")
            }
            if device.dmaMapped, entry?.attachDeferred != true {
                throw problem(.dmaMapped, "\(device.address) is not attach_deferred in the description")
            }
        }
    }

    private func checkDrivers() throws(Problem) {
        let drivers = Set(spec.drivers.map(\.name))
        var seen: [String: Int] = [:]
        for (index, driver) in state.drivers.enumerated() {
            let path: [Problem.Step] = [.key(StateKey.drivers.rawValue), .index(index), .key(DriverStateKey.name.rawValue)]
            if let first = seen.updateValue(index, forKey: driver.name) {
                throw Problem.inState("\(quoted(driver.name)) is already listed as state.drivers[\(first)]", path)
            }
            guard drivers.contains(driver.name) else { throw Problem.inState("unknown driver \(quoted(driver.name))", path) }
        }
    }

    private func checkContainers() throws(Problem) {
        let ids = Set(state.groups.map(\.id))
        var names: Set<String> = []
        var claimed: Set<Int> = []
        for (index, container) in state.vfioContainers.enumerated() {
            guard names.insert(container.name).inserted else {
                throw Problem.inState("container \(quoted(container.name)) is listed twice", .key(StateKey.vfioContainers.rawValue),
                                      .index(index), .key(ContainerKey.name.rawValue))
            }
            for (d, domain) in container.domains.enumerated() {
                for (g, id) in domain.enumerated() where !ids.contains(id) || !claimed.insert(id).inserted {
                    throw Problem.inState(ids.contains(id) ? "group \(id) is already in a container" : "group \(id) is not in state.groups",
                                          .key(StateKey.vfioContainers.rawValue), .index(index),
                                          .key(ContainerKey.domains.rawValue), .index(d), .index(g))
                }
            }
        }
    }

    private func checkContexts() throws(Problem) {
        let present = Set(state.devices.map(\.address))
        var names: Set<String> = []
        var bound: Set<PCIAddress> = []
        for (index, context) in state.iommufd.enumerated() {
            guard names.insert(context.context).inserted else {
                throw Problem.inState("context \(quoted(context.context)) is listed twice", .key(StateKey.iommufd.rawValue),
                                      .index(index), .key(IOMMUFDKey.context.rawValue))
            }
            for (position, address) in context.devices.enumerated() where !present.contains(address) || !bound.insert(address).inserted {
                throw Problem.inState(present.contains(address) ? "\(address) is already bound to a context" : "\(address) is not in state.devices",
                                      .key(StateKey.iommufd.rawValue), .index(index), .key(IOMMUFDKey.devices.rawValue), .index(position))
            }
        }
    }
}

extension Problem {
    /// A problem at `state` + `path`.
    static func inState(_ reason: String, _ path: Step...) -> Problem {
        inState(reason, path)
    }

    static func inState(_ reason: String, _ path: [Step]) -> Problem {
        var problem = Problem(reason)
        problem.path = [.key(RootKey.state.rawValue)] + path
        return problem
    }
}
