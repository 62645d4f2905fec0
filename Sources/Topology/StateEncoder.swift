import IOMMUCore

/// A running machine's `state` section (see `MachineState`): every group
/// and present device, and only the knobs that differ from how the device
/// booted, so that a dump of a fresh machine reads short. Everything is
/// sorted (groups by id, devices by address, contexts and containers by
/// name), so equal states give equal text, and equal states compare equal
/// (what the fuzz targets check a failed store against).
///
/// Each object is read under its own lock; a dump taken while other
/// changes run may show some of them and not others.
public enum StateEncoder {
    public static func state(of machine: Machine) -> JSON {
        // First: reading a device's knobs waits for its reset to end.
        let resets = machine.resettingDevices
        let groups = machine.groups
        let devices = machine.devices.sorted { $0.address < $1.address }
        var members = [
            JSON.Member(StateKey.groups.rawValue, .array(groups.map(group))),
            JSON.Member(StateKey.devices.rawValue, .array(devices.map(device))),
        ]
        let drivers = machine.drivers.values.sorted { $0.name < $1.name }.compactMap { dynamicIDs(machine, $0) }
        if !drivers.isEmpty { members.append(.init(StateKey.drivers.rawValue, .array(drivers))) }
        let containers = vfioContainers(machine, groups)
        if !containers.isEmpty { members.append(.init(StateKey.vfioContainers.rawValue, .array(containers))) }
        let contexts = iommufdContexts(devices)
        if !contexts.isEmpty { members.append(.init(StateKey.iommufd.rawValue, .array(contexts))) }
        let faults = machine.faults.armedFaults
        if !faults.isEmpty {
            members.append(.init(StateKey.faults.rawValue, .array(faults.map { .object(FaultCoding.members($0.point, $0.fault)) })))
        }
        if !resets.isEmpty { members.append(.init(StateKey.resets.rawValue, .array(resets.map { .string($0.description) }))) }
        if machine.noIOMMUModeEnabled != machine.bootNoIOMMUMode {
            members.append(.init(StateKey.moduleParameters.rawValue, .object([
                .init(ModuleParameterKey.noIOMMUMode.rawValue, .string(machine.noIOMMUModeEnabled ? "Y" : "N")),
            ])))
        }
        return .object(members)
    }

    private static func group(_ group: IOMMUGroup) -> JSON {
        let snapshot = group.snapshot
        var members = [
            JSON.Member(GroupStateKey.id.rawValue, .integer(snapshot.id)),
            JSON.Member(GroupStateKey.devices.rawValue, .array(snapshot.devices.sorted().map { .string($0.description) })),
        ]
        if let type = snapshot.defaultDomainType { members.append(.init(GroupStateKey.type.rawValue, .string(type.sysfsName))) }
        return .object(members)
    }

    private static func device(_ device: Device) -> JSON {
        var members = [JSON.Member(DeviceStateKey.address.rawValue, .string(device.address.description))]
        func add(_ key: DeviceStateKey, _ value: JSON) { members.append(.init(key.rawValue, value)) }
        if let driver = device.driver { add(.driver, .string(driver.name)) }
        if let name = device.driverOverride { add(.driverOverride, .string(name)) }
        let methods = device.activeResetMethods
        if methods != device.resetMethods { add(.resetMethods, .array(methods.map { .string($0) })) }
        if let sriov = device.sriov {
            if device.driversAutoprobe != sriov.driversAutoprobe { add(.driversAutoprobe, .bool(device.driversAutoprobe)) }
            let count = device.virtualFunctions.count
            if count > 0 { add(.numVFs, .integer(count)) }
        }
        if device.attachDeferred, let group = device.group, !group.isAttachDeferred(device) { add(.dmaMapped, .bool(true)) }
        return .object(members)
    }

    private static func dynamicIDs(_ machine: Machine, _ driver: PCIDriver) -> JSON? {
        let ids = machine.dynamicIDs(of: driver)
        guard !ids.isEmpty else { return nil }
        return .object([.init(DriverStateKey.name.rawValue, .string(driver.name)),
                        .init(DriverStateKey.newIDs.rawValue, .array(ids.map { .string(newIDLine($0)) }))])
    }

    /// The shortest `new_id` line that adds `id` again: vendor and device,
    /// then the subsystem ids and the class only where they match less
    /// than everything, and all seven fields for an id given with its
    /// driver data (which `new_id_store` takes even for an id matched already).
    private static func newIDLine(_ id: PCIDynamicID) -> String {
        var fields = [id.vendor, id.device]
        let hasClass = id.classMask != 0
        if hasClass || id.driverData != nil || id.subvendor != PCIDynamicID.any || id.subdevice != PCIDynamicID.any {
            fields += [id.subvendor, id.subdevice]
        }
        if hasClass || id.driverData != nil { fields += [id.classCode, id.classMask] }
        var words = fields.map { String($0, radix: 16) }
        if let data = id.driverData { words.append(String(data, radix: 16)) }
        return words.joined(separator: " ")
    }

    /// Each container with its groups, split by the domain they share.
    private static func vfioContainers(_ machine: Machine, _ groups: [IOMMUGroup]) -> [JSON] {
        var byContainer: [String: [[IOMMUGroup]]] = [:]
        for group in groups {
            guard let name = machine.vfioContainer(of: group) else { continue }
            var domains = byContainer[name] ?? []
            if let index = domains.firstIndex(where: { machine.shareVFIODomain($0[0], group) }) {
                domains[index].append(group)
            } else {
                domains.append([group])
            }
            byContainer[name] = domains
        }
        return byContainer.sorted { $0.key < $1.key }.map { name, domains in
            .object([.init(ContainerKey.name.rawValue, .string(name)),
                     .init(ContainerKey.domains.rawValue, .array(domains.map { .array($0.map { .integer($0.id) }) }))])
        }
    }

    private static func iommufdContexts(_ devices: [Device]) -> [JSON] {
        var byContext: [String: [Device]] = [:]
        for device in devices {
            if let context = device.iommufdContext { byContext[context, default: []].append(device) }
        }
        return byContext.sorted { $0.key < $1.key }.map { context, devices in
            .object([.init(IOMMUFDKey.context.rawValue, .string(context)),
                     .init(IOMMUFDKey.devices.rawValue, .array(devices.map { .string($0.address.description) }))])
        }
    }
}
