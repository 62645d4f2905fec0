import IOMMUCore

/// A document's `state` section: what a running machine changed since it
/// booted from the description, as `iommufs ctl dump` writes it. Booting
/// the document restores it (`StateRestorer`).
struct MachineState: Sendable {
    /// A group, with its id, members and default-domain type.
    struct Group: Sendable {
        var id: Int
        var devices: [PCIAddress]
        /// nil: the group has no default domain (`type` reads `unknown`).
        var type: DomainType?
    }

    /// A present device and its knobs; fields that are nil keep the boot value.
    struct Device: Sendable {
        var address: PCIAddress
        /// The bound driver; nil: unbound.
        var driver: String?
        var driverOverride: String?
        var resetMethods: [String]?
        var driversAutoprobe: Bool?
        var numVFs: Int
        /// The deferred first attach has happened (`ctl dma-map`).
        var dmaMapped: Bool
    }

    /// A driver's dynamic ids, as `new_id` takes them, oldest first.
    struct Driver: Sendable {
        var name: String
        var newIDs: [String]
    }

    /// A legacy VFIO container: its groups, by the domain they share.
    struct Container: Sendable {
        var name: String
        var domains: [[Int]]
    }

    /// Devices bound to one iommufd context.
    struct IOMMUFDContext: Sendable {
        var context: String
        var devices: [PCIAddress]
    }

    /// A fault armed at a point (`ctl inject`), armed again once the
    /// machine is in its state.
    struct ArmedFault: Sendable {
        var point: FaultPoint
        var fault: FaultInjector.Fault
    }

    var groups: [Group]
    var devices: [Device]
    var drivers: [Driver]
    var vfioContainers: [Container]
    var iommufd: [IOMMUFDContext]
    var faults: [ArmedFault]
    /// vfio's `enable_unsafe_noiommu_mode`, when it differs from the boot's.
    var noIOMMUMode: Bool?
    /// Devices whose reset was running when the state was taken; a reset
    /// ends by itself, so a restored machine has none running.
    var resets: [PCIAddress]
}

enum StateKey: String, FieldKey {
    static let byName = nameTable()
    case groups, devices, drivers, vfioContainers = "vfio_containers", iommufd, faults, resets
    case moduleParameters = "module_parameters"
}

/// The module parameters a state carries, as `module.parameter` (the
/// kernel command line's spelling) with the text their sysfs file shows.
enum ModuleParameterKey: String, FieldKey {
    static let byName = nameTable()
    case noIOMMUMode = "vfio.enable_unsafe_noiommu_mode"
}

enum GroupStateKey: String, FieldKey {
    static let byName = nameTable()
    case id, devices, type
}

enum DeviceStateKey: String, FieldKey {
    static let byName = nameTable()
    case address, driver, driverOverride = "driver_override", resetMethods = "reset_methods"
    case driversAutoprobe = "drivers_autoprobe", numVFs = "num_vfs", dmaMapped = "dma_mapped"
}

enum DriverStateKey: String, FieldKey {
    static let byName = nameTable()
    case name, newIDs = "new_ids"
}

enum ContainerKey: String, FieldKey {
    static let byName = nameTable()
    case name, domains
}

enum IOMMUFDKey: String, FieldKey {
    static let byName = nameTable()
    case context, devices
}

extension Names {
    /// The types a default domain can have (what `type` accepts).
    static let defaultDomainTypes: [(name: String, value: DomainType)] = [
        ("identity", .identity), ("DMA", .dma), ("DMA-FQ", .dmaFQ),
    ]
}

/// Decodes the `state` section object by object; what refers across
/// objects is checked by `StateChecks`, and what only the kernel logic can
/// judge, when it is restored.
enum StateDecoder {
    static func state(_ json: JSON) throws(Problem) -> MachineState {
        let fields = try Fields<StateKey>(json)
        return MachineState(
            groups: try fields.required(.groups, .array(of: ValueDecoder(group))),
            devices: try fields.required(.devices, .array(of: ValueDecoder(device))),
            drivers: try fields.optional(.drivers, .array(of: ValueDecoder(driver))) ?? [],
            vfioContainers: try fields.optional(.vfioContainers, .array(of: ValueDecoder(container))) ?? [],
            iommufd: try fields.optional(.iommufd, .array(of: ValueDecoder(context))) ?? [],
            faults: try fields.optional(.faults, .array(of: ValueDecoder(fault))) ?? [],
            noIOMMUMode: try fields.optional(.moduleParameters, ValueDecoder(moduleParameters)) ?? nil,
            resets: try fields.optional(.resets, .array(of: .address)) ?? [])
    }

    /// `{"vfio.enable_unsafe_noiommu_mode": "Y"}`: what the parameter's
    /// file would take (`kstrtobool`).
    static func moduleParameters(_ json: JSON) throws(Problem) -> Bool? {
        let fields = try Fields<ModuleParameterKey>(json)
        return try fields.optional(.noIOMMUMode, ValueDecoder { json throws(Problem) in
            let text = try ValueDecoder<String>.string.decode(json)
            guard let value = KernelStrings.bool(text) else { throw Problem(quoted(text) + " is not a bool parameter's value (Y or N)") }
            return value
        })
    }

    static func group(_ json: JSON) throws(Problem) -> MachineState.Group {
        let fields = try Fields<GroupStateKey>(json)
        let devices = try fields.required(.devices, .array(of: .address))
        guard !devices.isEmpty else { throw Problem("a group has at least one device", at: .key(GroupStateKey.devices.rawValue)) }
        return MachineState.Group(
            id: Int(try fields.required(.id, .unsigned(bits: 20))),
            devices: devices,
            type: try fields.optional(.type, .choice(Names.defaultDomainTypes, "default domain type")))
    }

    static func device(_ json: JSON) throws(Problem) -> MachineState.Device {
        let fields = try Fields<DeviceStateKey>(json)
        return MachineState.Device(
            address: try fields.required(.address, .address),
            driver: try fields.optional(.driver, .name),
            driverOverride: try fields.optional(.driverOverride, ValueDecoder(driverOverride)),
            resetMethods: try fields.optional(.resetMethods, .array(of: .name)),
            driversAutoprobe: try fields.optional(.driversAutoprobe, .bool),
            numVFs: Int(try fields.optional(.numVFs, .unsigned(bits: 16)) ?? 0),
            dmaMapped: try fields.optional(.dmaMapped, .bool) ?? false)
    }

    /// What `driver_override` keeps (`driver_set_override`: any bytes up
    /// to the first newline): one non-empty line, shorter than 4095 bytes.
    static func driverOverride(_ json: JSON) throws(Problem) -> String {
        let text = try ValueDecoder<String>.string.decode(json)
        guard !text.isEmpty, !text.utf8.contains(UInt8(ascii: "\n")), !text.utf8.contains(0), text.utf8.count < 4095 else {
            throw Problem("a driver_override is one line of less than 4095 bytes")
        }
        return text
    }

    static func driver(_ json: JSON) throws(Problem) -> MachineState.Driver {
        let fields = try Fields<DriverStateKey>(json)
        return MachineState.Driver(name: try fields.required(.name, .name),
                                   newIDs: try fields.required(.newIDs, .array(of: ValueDecoder(newID))))
    }

    /// A `new_id` line: two to seven hex fields ("8086 1521").
    static func newID(_ json: JSON) throws(Problem) -> String {
        let text = try ValueDecoder<String>.string.decode(json)
        let words = text.split(separator: " ")
        let parsed = Array(text.utf8).withUnsafeBytes { KernelStrings.hexFields($0, limit: 7) }
        guard (2...7).contains(words.count), parsed.count == words.count else {
            throw Problem(quoted(text) + " is not a new_id line (expected 2 to 7 hex fields: vendor device "
                          + "[subvendor subdevice [class class_mask [driver_data]]])")
        }
        return text
    }

    static func container(_ json: JSON) throws(Problem) -> MachineState.Container {
        let fields = try Fields<ContainerKey>(json)
        let domains = try fields.required(.domains, .array(of: .array(of: ValueDecoder { json throws(Problem) in
            Int(try ValueDecoder.unsigned(bits: 20).decode(json))
        })))
        guard !domains.isEmpty, domains.allSatisfy({ !$0.isEmpty }) else {
            throw Problem("a container has at least one domain, each with at least one group",
                          at: .key(ContainerKey.domains.rawValue))
        }
        // Any non-empty name: a container's name is the user's label for its file.
        let name = try fields.required(.name, .string)
        guard !name.isEmpty else { throw Problem("a container's name is not empty", at: .key(ContainerKey.name.rawValue)) }
        return MachineState.Container(name: name, domains: domains)
    }

    static func context(_ json: JSON) throws(Problem) -> MachineState.IOMMUFDContext {
        let fields = try Fields<IOMMUFDKey>(json)
        return MachineState.IOMMUFDContext(context: try fields.required(.context, .name),
                                           devices: try fields.required(.devices, .array(of: .address)))
    }
}
