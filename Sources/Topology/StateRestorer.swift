import IOMMUCore
import SystemPackage

/// Brings a machine that has just booted from a description to the
/// description's `state`, through the operations a user has (sysfs stores,
/// VFIO and iommufd calls), so that the kernel logic judges every step and
/// an impossible state fails with the step's errno and path.
///
/// The order is one in which every state a machine can reach is restored:
/// hot-removed devices go first (freeing their group ids), dynamic ids and
/// VFs are added while drivers may still bind, then every driver lets go
/// so that each group's type can be written, then the knobs, drivers,
/// deferred attaches and finally the DMA owners, which need the drivers in
/// place (VFIO refuses groups with a normal driver bound, and the other way
/// round). The result is checked against the listed devices and groups.
///
/// Two states come only from a failed default-domain setup at hot-plug,
/// which no sequence of writes can aim at one device: a listed device in
/// no listed group (v6.5+ takes it out of its group again), and a listed
/// group without a `type` (up to v6.4 the group stays without a default
/// domain). The restore takes the machine there with the model's port of
/// that failure path, and refuses them where the profile's kernel cannot
/// reach them.
struct StateRestorer {
    let machine: Machine
    let spec: MachineSpec
    let state: MachineState

    func restore() throws(Problem) {
        if let on = state.noIOMMUMode { _ = Array((on ? "Y" : "N").utf8).withUnsafeBytes { machine.storeNoIOMMUMode($0) } }
        removeUnlisted()
        regroupFunctions()
        try addDynamicIDs()
        try enableVFs()
        for device in machine.devices where device.driver != nil { _ = machine.unbind(device) }
        restoreFailedProbes()
        try restoreTypes()
        try restoreKnobs()
        try bindDrivers()
        try mapDMA()
        try attachContainers()
        try bindContexts()
        try checkDevices()
        try checkGroups()
        try armFaults()
    }

    /// The armed faults, last: nothing of the restore may set them off.
    private func armFaults() throws(Problem) {
        for (index, entry) in state.faults.enumerated() {
            do {
                try machine.faults.arm(entry.point, entry.fault)
            } catch {
                throw Problem.inState(error.description, .key(StateKey.faults.rawValue), .index(index))
            }
        }
    }

    /// Described devices the state does not list were hot-removed.
    private func removeUnlisted() {
        let listed = Set(state.devices.map(\.address))
        for entry in spec.devices where !listed.contains(entry.address) {
            if let device = machine.device(at: entry.address) { machine.remove(device) }
        }
    }

    /// A function a rescan put in a group of its own (no multifunction bit)
    /// goes and comes back the same way, into the id the state gives it.
    private func regroupFunctions() {
        let regrouped = StateChecks.regroupedFunctions(spec, state)
        guard !regrouped.isEmpty else { return }
        for address in regrouped.sorted() { machine.device(at: address).map(machine.remove) }
        machine.rescan(only: regrouped)
    }

    private func addDynamicIDs() throws(Problem) {
        for (index, entry) in state.drivers.enumerated() {
            guard let driver = machine.driver(named: entry.name) else { continue }
            for (position, line) in entry.newIDs.enumerated() {
                let error = Array(line.utf8).withUnsafeBytes { machine.addDynamicID(driver, $0) }
                if let error {
                    throw Problem.inState("new_id \(quoted(line)) fails: \(error)", .key(StateKey.drivers.rawValue), .index(index),
                                          .key(DriverStateKey.newIDs.rawValue), .index(position))
                }
            }
        }
    }

    /// `sriov_numvfs` needs a driver on the PF: its state driver, else its
    /// native one, bound for the while if it is not already.
    private func enableVFs() throws(Problem) {
        for (index, entry) in state.devices.enumerated() where entry.numVFs > 0 {
            let pf = try device(index)
            let driver = [entry.driver, pf.nativeDriverName].compactMap { $0 }.first.flatMap(machine.driver(named:))
            if pf.driver == nil, let driver { _ = machine.bind(pf, to: driver) }
            if let error = machine.setNumberOfVFs(pf, entry.numVFs) {
                throw Problem.inState("cannot enable \(entry.numVFs) VFs: \(error)", .key(StateKey.devices.rawValue),
                                      .index(index), .key(DeviceStateKey.numVFs.rawValue))
            }
        }
    }

    /// Listed devices that are in no listed group: their IOMMU probe failed
    /// at hot-plug and was undone (`checkGroups` refuses what is left where
    /// the profile keeps such devices in their group).
    private func restoreFailedProbes() {
        let grouped = Set(state.groups.flatMap(\.devices))
        for entry in state.devices where !grouped.contains(entry.address) {
            if let device = machine.device(at: entry.address), device.unit != nil { machine.restoreFailedIOMMUProbe(device) }
        }
    }

    /// Each group's type as a root write to `type` would set it; a DMA-FQ
    /// that the unit turns into DMA at setup is reached by the live switch.
    /// A group listed without a type lost its default domain at hot-plug,
    /// where the profile's kernel lets that happen.
    private func restoreTypes() throws(Problem) {
        for (index, entry) in state.groups.enumerated() {
            let path: [Problem.Step] = [.key(StateKey.groups.rawValue), .index(index), .key(GroupStateKey.type.rawValue)]
            guard let type = entry.type else {
                // A no-IOMMU group comes back with vfio-pci's bind.
                let noIOMMU = entry.devices.allSatisfy { machine.device(at: $0)?.unit == nil }
                guard !machine.subsystem.profile.unwindsFailedIOMMUProbe, !noIOMMU else { continue }
                let group = try self.group(index)
                if group.snapshot.defaultDomainType != nil, let error = group.restoreFailedDefaultDomain() {
                    throw Problem.inState("the group's default domain cannot be taken away: \(error)", path)
                }
                continue
            }
            let group = try self.group(index)
            for _ in 0..<2 where group.snapshot.defaultDomainType != type {
                if case .failure(let error) = Array(type.sysfsName.utf8).withUnsafeBytes({
                    group.storeType($0, caller: FullyPrivileged())
                }) {
                    throw Problem.inState("writing \(type.sysfsName) to the group's type fails: \(error)", path)
                }
            }
            if let now = group.snapshot.defaultDomainType, now != type {
                throw Problem.inState("the group's type becomes \(now.sysfsName), not \(type.sysfsName)", path)
            }
        }
    }

    private func restoreKnobs() throws(Problem) {
        for (index, entry) in state.devices.enumerated() {
            let device = try device(index)
            if let name = entry.driverOverride {
                _ = Array(name.utf8).withUnsafeBytes { machine.setDriverOverride(device, $0) }
            }
            if let methods = entry.resetMethods {
                let error = Array(methods.joined(separator: " ").utf8).withUnsafeBytes { machine.setResetMethods(device, $0) }
                if let error {
                    throw Problem.inState("reset_method \(quoted(methods.joined(separator: " "))) fails: \(error)",
                                          .key(StateKey.devices.rawValue), .index(index), .key(DeviceStateKey.resetMethods.rawValue))
                }
            }
            if let on = entry.driversAutoprobe { machine.setDriversAutoprobe(device, on) }
        }
    }

    private func bindDrivers() throws(Problem) {
        for (index, entry) in state.devices.enumerated() {
            guard let name = entry.driver, let driver = machine.driver(named: name) else { continue }
            if let error = machine.bind(try device(index), to: driver) {
                throw Problem.inState("binding \(name) fails: \(error)", .key(StateKey.devices.rawValue), .index(index),
                                      .key(DeviceStateKey.driver.rawValue))
            }
        }
    }

    private func mapDMA() throws(Problem) {
        for (index, entry) in state.devices.enumerated() where entry.dmaMapped {
            if let error = machine.mapDMA(try device(index)) {
                throw Problem.inState("the deferred attach fails: \(error)", .key(StateKey.devices.rawValue), .index(index),
                                      .key(DeviceStateKey.dmaMapped.rawValue))
            }
        }
    }

    /// Groups attach domain by domain; the domains they end up sharing
    /// must be the listed ones (the kernel shares a container's domain
    /// between groups behind units of one IOMMU driver).
    private func attachContainers() throws(Problem) {
        for (index, container) in state.vfioContainers.enumerated() {
            func path(_ d: Int, _ g: Int) -> [Problem.Step] {
                [.key(StateKey.vfioContainers.rawValue), .index(index), .key(ContainerKey.domains.rawValue), .index(d), .index(g)]
            }
            var firsts: [(id: Int, group: IOMMUGroup)] = []
            for (d, domain) in container.domains.enumerated() {
                for (g, id) in domain.enumerated() {
                    guard let group = machine.group(id: id) else { throw Problem.inState("there is no group \(id)", path(d, g)) }
                    if let error = machine.attachVFIOGroup(group, to: container.name) {
                        throw Problem.inState("attaching group \(id) fails: \(error)", path(d, g))
                    }
                    if g == 0 {
                        if let shared = firsts.first(where: { machine.shareVFIODomain($0.group, group) }) {
                            throw Problem.inState("group \(id) shares the domain of group \(shared.id) (their IOMMU units have one driver)",
                                                  path(d, g))
                        }
                        firsts.append((id, group))
                    } else if !machine.shareVFIODomain(firsts[d].group, group) {
                        throw Problem.inState("group \(id) does not share the domain of group \(firsts[d].id) "
                                              + "(their IOMMU units have different drivers)", path(d, g))
                    }
                }
            }
        }
    }

    private func bindContexts() throws(Problem) {
        for (index, context) in state.iommufd.enumerated() {
            for (position, address) in context.devices.enumerated() {
                let path: [Problem.Step] = [.key(StateKey.iommufd.rawValue), .index(index), .key(IOMMUFDKey.devices.rawValue), .index(position)]
                guard let device = machine.device(at: address) else { throw Problem.inState("\(address) is not present", path) }
                if let error = machine.bindIOMMUFD(device, context: context.context) {
                    throw Problem.inState("binding \(address) to context \(quoted(context.context)) fails: \(error)", path)
                }
            }
        }
    }

    /// The present devices are exactly the listed ones.
    private func checkDevices() throws(Problem) {
        let listed = Set(state.devices.map(\.address))
        if let extra = machine.devices.first(where: { !listed.contains($0.address) }) {
            throw Problem.inState("\(extra.address) is present after the restore but not listed (a VF of a listed num_vfs?)",
                                  .key(StateKey.devices.rawValue))
        }
        for index in state.devices.indices { _ = try device(index) }
    }

    /// The groups are exactly the listed ones, with their ids and members.
    private func checkGroups() throws(Problem) {
        for (index, entry) in state.groups.enumerated() {
            let path: [Problem.Step] = [.key(StateKey.groups.rawValue), .index(index)]
            let group = try self.group(index)
            guard group.id == entry.id else {
                throw Problem.inState("the group of \(entry.devices[0]) boots as group \(group.id)", path + [.key(GroupStateKey.id.rawValue)])
            }
            let snapshot = group.snapshot
            guard Set(snapshot.devices) == Set(entry.devices) else {
                throw Problem.inState("group \(group.id) has the devices " + snapshot.devices.map(\.description).joined(separator: ", "),
                                      path + [.key(GroupStateKey.devices.rawValue)])
            }
            if entry.type == nil, let type = snapshot.defaultDomainType {
                throw Problem.inState("group \(group.id) has a default domain of type \(type.sysfsName): missing key \"type\" "
                                      + "(\(machine.subsystem.profile) never leaves a group of a translated device without one)", path)
            }
        }
        let count = machine.groups.count
        guard count == state.groups.count else {
            throw Problem.inState("the machine has \(count) groups, the state lists \(state.groups.count)", .key(StateKey.groups.rawValue))
        }
    }

    /// The group of `state.groups[index]`'s first device.
    private func group(_ index: Int) throws(Problem) -> IOMMUGroup {
        let address = state.groups[index].devices[0]
        guard let group = machine.device(at: address)?.group else {
            throw Problem.inState("\(address) is not present after the restore", .key(StateKey.groups.rawValue), .index(index),
                                  .key(GroupStateKey.devices.rawValue), .index(0))
        }
        return group
    }

    /// The present device of `state.devices[index]`.
    private func device(_ index: Int) throws(Problem) -> Device {
        let address = state.devices[index].address
        guard let device = machine.device(at: address) else {
            throw Problem.inState("\(address) is not present after the restore (neither described nor a VF of a listed num_vfs)",
                                  .key(StateKey.devices.rawValue), .index(index), .key(DeviceStateKey.address.rawValue))
        }
        return device
    }
}
