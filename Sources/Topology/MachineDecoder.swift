import IOMMUCore
import SystemPackage

// The keys of each object of the format; raw values are the document's spellings.
enum RootKey: String, FieldKey {
    static let byName = nameTable()
    case kernel, iommuUnits = "iommu_units", drivers, devices, state, profile, slots
}

enum KernelKey: String, FieldKey {
    static let byName = nameTable()
    case commandLine = "command_line", configDefault = "config_default", memoryEncryption = "memory_encryption"
}

enum UnitKey: String, FieldKey {
    static let byName = nameTable()
    case name, family, domainTypes = "domain_types", deferredFlush = "deferred_flush"
    case unsupportedTypeErrno = "unsupported_type_errno", forcesStrict = "forces_strict"
    case pciFunction = "pci_function", reservedRegions = "reserved_regions", registers
}

enum RegistersKey: String, FieldKey {
    static let byName = nameTable()
    case address, cap, ecap, version
}

enum DriverKey: String, FieldKey {
    static let byName = nameTable()
    case name, managesDMA = "manages_dma"
}

enum DeviceKey: String, FieldKey {
    static let byName = nameTable()
    case address, vendor, device, `class`, parent, iommu, group, driver
    case defDomainType = "def_domain_type", untrusted, reservedRegions = "reserved_regions"
    case nativeDriver = "native_driver", ats, resetMethods = "reset_methods", resetMilliseconds = "reset_ms"
    case sriov, attachDeferred = "attach_deferred", multifunction
    case pcieType = "pcie_type", revision, subsystemVendor = "subsystem_vendor", subsystemDevice = "subsystem_device"
    case irq, acs, pcieSlot = "pcie_slot", capabilities, extendedCapabilities = "extended_capabilities"
    case bars, rom, windows
}

/// `pcie_slot`: a port's Slot Capabilities (not a hot-plug driver's slot, `slots[]`).
enum PCIeSlotKey: String, FieldKey {
    static let byName = nameTable()
    case number, hotplug
}

enum SRIOVKey: String, FieldKey {
    static let byName = nameTable()
    case totalVFs = "total_vfs", offset, stride, vfDevice = "vf_device", vfDriver = "vf_driver"
    case driversAutoprobe = "drivers_autoprobe"
}

enum RegionKey: String, FieldKey {
    static let byName = nameTable()
    case start, end, type
}

/// The names the format accepts for each enumerated value.
enum Names {
    static let profiles = KernelProfile.all.map { (name: $0.name, value: $0) }
    static let configDefaults = BootOptions.ConfigDefault.allCases.map { (name: $0.rawValue, value: $0) }
    static let families = IOMMUDriverAbilities.Family.allCases.map { (name: $0.rawValue, value: $0) }
    static let domainTypes = DomainType.allCases.map { (name: $0.sysfsName, value: $0) }
    /// What a `def_domain_type()` op can answer.
    static let domainWishes: [(name: String, value: DomainType)] = [("identity", .identity), ("DMA", .dma)]
    static let regionKinds: [(name: String, value: ReservedRegion.Kind)] = [
        ("direct", .direct), ("direct-relaxable", .directRelaxable), ("reserved", .reserved),
        ("msi", .msi), ("sw-msi", .softwareMSI),
    ]
    static let portTypes: [(name: String, value: PCIFunctionSpec.PortType)] = [
        ("endpoint", .endpoint), ("legacy-endpoint", .legacyEndpoint), ("root-port", .rootPort),
        ("upstream", .upstream), ("downstream", .downstream), ("pcie-pci-bridge", .pcieToPCIBridge),
        ("pci-pcie-bridge", .pciToPCIeBridge), ("rc-endpoint", .rootComplexEndpoint), ("rc-event-collector", .eventCollector),
    ]
    static let capabilities: [(name: String, value: PCIFunctionSpec.Capability)] = [
        ("pm", .powerManagement), ("msi", .msi), ("vendor", .vendorSpecific), ("ssvid", .bridgeSubsystem),
        ("pcie", .pciExpress), ("msix", .msix), ("sata", .sata),
    ]
    static let extendedCapabilities: [(name: String, value: PCIFunctionSpec.ExtendedCapability)] = [
        ("aer", .advancedErrorReporting), ("dsn", .serialNumber), ("acs", .accessControl),
        ("ari", .alternativeRoutingID), ("ats", .addressTranslation), ("sriov", .sriov),
    ]
    /// Errnos an IOMMU driver's domain allocation plausibly fails with.
    static let allocationErrnos: [(name: String, value: Errno)] = [
        ("ENOMEM", .noMemory), ("EOPNOTSUPP", .operationNotSupported), ("ENODEV", .noDevice),
        ("EINVAL", .invalidArgument), ("ENOSPC", .noSpace), ("EBUSY", .resourceBusy),
    ]
}

/// An IOMMU unit as the document describes it, before its sysfs path is known.
struct UnitEntry {
    var name: String
    var abilities: IOMMUDriverAbilities
    /// AMD only: the unit's own PCI function, its sysfs parent.
    var pciFunction: PCIAddress?
    /// Intel only: what `intel-iommu/` shows.
    var registers: VTdRegisters?
    /// Appended to the regions of every device behind the unit.
    var reservedRegions: [ReservedRegion]
}

/// Decodes each object of the format on its own; `MachineAssembly` then
/// checks what spans objects.
enum MachineDecoder {
    /// The description and, if the document has one, its checked `state`
    /// with the group ids it restores (`MachineSpec.groupIDs`).
    static func document(_ root: JSON) throws(Problem) -> (spec: MachineSpec, state: (MachineState, groupIDs: [PCIAddress: Int])?) {
        let fields = try Fields<RootKey>(root)
        var spec = try MachineAssembly(
            boot: try fields.optional(.kernel, ValueDecoder(bootOptions)) ?? BootOptions(),
            units: try fields.required(.iommuUnits, .array(of: ValueDecoder(unit))),
            drivers: try fields.optional(.drivers, .array(of: ValueDecoder(driver))) ?? [],
            devices: try fields.required(.devices, .array(of: ValueDecoder(device)))
        ).spec()
        // The kernel the machine was captured on or written for; --profile overrides it.
        spec.profile = try fields.optional(.profile, .choice(Names.profiles, "kernel profile"))
        let devices = spec.devices
        spec.slots = try fields.optional(.slots, ValueDecoder { json throws(Problem) in try SlotDecoder.slots(json, devices: devices) }) ?? []
        guard let state = try fields.optional(.state, ValueDecoder(StateDecoder.state)) else { return (spec, nil) }
        return (spec, (state, try StateChecks(spec: spec, state: state).groupIDs()))
    }

    static func bootOptions(_ json: JSON) throws(Problem) -> BootOptions {
        let fields = try Fields<KernelKey>(json)
        return BootOptions(
            commandLine: try fields.optional(.commandLine, .string) ?? "",
            configDefault: try fields.optional(.configDefault, .choice(Names.configDefaults, "config_default")) ?? .lazy,
            memoryEncryption: try fields.optional(.memoryEncryption, .bool) ?? false)
    }

    static func unit(_ json: JSON) throws(Problem) -> UnitEntry {
        let fields = try Fields<UnitKey>(json)
        let name = try fields.required(.name, .name)
        let family = try fields.required(.family, .choice(Names.families, "IOMMU family"))
        // Absent keys keep the core's defaults for the family.
        var abilities = IOMMUDriverAbilities(family: family)
        if let types = try fields.optional(.domainTypes, ValueDecoder(domainTypes)) { abilities.domainTypes = types }
        if let flag = try fields.optional(.deferredFlush, .bool) { abilities.deferredFlush = flag }
        if let errno = try fields.optional(.unsupportedTypeErrno, .choice(Names.allocationErrnos, "errno")) {
            abilities.unsupportedTypeErrno = errno
        }
        if let flag = try fields.optional(.forcesStrict, .bool) { abilities.forcesStrict = flag }

        let pciFunction = try fields.optional(.pciFunction, .address)
        switch (family, pciFunction) {
        case (.amd, nil):
            throw Problem("missing key \"pci_function\" (an AMD unit sits under its own PCI function)")
        case (.intel, _?):
            throw Problem("an Intel unit has no PCI function (it is a virtual device); remove the key",
                          at: .key(UnitKey.pciFunction.rawValue))
        default:
            break
        }
        let registers = try fields.optional(.registers, ValueDecoder(vtdRegisters))
        if family != .intel, registers != nil {
            throw Problem("only an Intel unit shows VT-d registers; remove the key", at: .key(UnitKey.registers.rawValue))
        }
        return UnitEntry(name: name, abilities: abilities, pciFunction: pciFunction, registers: registers,
                         reservedRegions: try fields.optional(.reservedRegions, .array(of: ValueDecoder(region))) ?? [])
    }

    /// `domain_types`: DMA-FQ may be listed, but only along with DMA, since
    /// a flush queue is a feature of a DMA domain.
    static func domainTypes(_ json: JSON) throws(Problem) -> Set<DomainType> {
        let types = Set(try ValueDecoder.array(of: .choice(Names.domainTypes, "domain type")).decode(json))
        guard !types.contains(.dmaFQ) || types.contains(.dma) else {
            throw Problem("\"DMA-FQ\" is listed without \"DMA\" (a flush queue is a feature of a DMA domain)")
        }
        return types
    }

    static func driver(_ json: JSON) throws(Problem) -> PCIDriver {
        let fields = try Fields<DriverKey>(json)
        return PCIDriver(name: try fields.required(.name, .name),
                         managesDMA: try fields.optional(.managesDMA, .bool) ?? false)
    }

    static func device(_ json: JSON) throws(Problem) -> MachineSpec.DeviceSpec {
        let fields = try Fields<DeviceKey>(json)
        let sriov = try fields.optional(.sriov, ValueDecoder(sriov))
        let ats = try fields.optional(.ats, .bool) ?? false
        var spec = MachineSpec.DeviceSpec(
            address: try fields.required(.address, .address),
            vendorID: UInt16(try fields.required(.vendor, .unsigned(bits: 16))),
            deviceID: UInt16(try fields.required(.device, .unsigned(bits: 16))),
            classCode: UInt32(try fields.required(.class, .unsigned(bits: 24))),
            parent: try fields.optional(.parent, .address),
            // Required but nullable: a forgotten key must not silently make a no-IOMMU device.
            unit: try fields.required(.iommu, .nullable(.string)),
            group: try fields.required(.group, ValueDecoder(groupLabel)),
            driver: try fields.optional(.driver, .name),
            domainWish: try fields.optional(.defDomainType, .choice(Names.domainWishes, "def_domain_type")),
            untrusted: try fields.optional(.untrusted, .bool) ?? false,
            reservedRegions: try fields.optional(.reservedRegions, .array(of: ValueDecoder(region))) ?? [],
            nativeDriver: try fields.optional(.nativeDriver, .name),
            ats: ats,
            resetMethods: try fields.optional(.resetMethods, .array(of: .name)),
            resetDuration: .milliseconds(try fields.optional(.resetMilliseconds, .unsigned(bits: 32)) ?? 100),
            sriov: sriov,
            attachDeferred: try fields.optional(.attachDeferred, .bool) ?? false,
            multifunction: try fields.optional(.multifunction, .bool) ?? true,
            function: try function(fields, sriov: sriov != nil, ats: ats))
        spec.resources = try ResourceDecoder.layout(fields, bridge: spec.headerLayout == 1)
        return spec
    }

    /// The config-space keys; nil when none is given and nothing (SR-IOV,
    /// ATS) needs an extended capability. A function with extended
    /// capabilities is PCIe (an endpoint unless `pcie_type` says otherwise).
    /// The capability lists must name exactly the capabilities the other
    /// keys describe (`pcie` with `pcie_type`, `acs` with `acs`, `sriov`
    /// with `sriov`, `ats` with `ats`); without them, the lists hold those.
    static func function(_ fields: Fields<DeviceKey>, sriov: Bool, ats: Bool) throws(Problem) -> PCIFunctionSpec? {
        let keys: [DeviceKey] = [.pcieType, .revision, .subsystemVendor, .subsystemDevice, .irq, .acs, .pcieSlot,
                                 .capabilities, .extendedCapabilities]
        guard sriov || ats || keys.contains(where: fields.has) else { return nil }
        let acs = try fields.optional(.acs, .unsigned(bits: 16)).map(UInt16.init)
        var extended: [PCIFunctionSpec.ExtendedCapability] = []
        if acs != nil { extended.append(.accessControl) }
        if ats { extended.append(.addressTranslation) }
        if sriov { extended.append(.sriov) }
        if let listed = try fields.optional(.extendedCapabilities, .array(of: .choice(Names.extendedCapabilities, "extended capability"))) {
            try requireSameKinds(listed, extended, factBacked: [.accessControl, .addressTranslation, .sriov],
                                 key: .extendedCapabilities, Names.extendedCapabilities)
            extended = listed
        }
        let portType = try fields.optional(.pcieType, .choice(Names.portTypes, "PCIe port type"))
            ?? (extended.isEmpty ? nil : .endpoint)
        if !extended.isEmpty, portType == nil {
            throw Problem("extended capabilities need PCIe (\"pcie_type\")", at: .key(DeviceKey.extendedCapabilities.rawValue))
        }
        var standard: [PCIFunctionSpec.Capability] = portType == nil ? [] : [.pciExpress]
        if let listed = try fields.optional(.capabilities, .array(of: .choice(Names.capabilities, "capability"))) {
            try requireSameKinds(listed, standard, factBacked: [.pciExpress], key: .capabilities, Names.capabilities)
            standard = listed
        }
        let slot = try fields.optional(.pcieSlot, ValueDecoder(pcieSlot))
        if slot != nil, portType?.hasSlots != true {
            throw Problem("only a root port or a downstream port implements a slot", at: .key(DeviceKey.pcieSlot.rawValue))
        }
        return PCIFunctionSpec(
            portType: portType,
            revision: UInt8(try fields.optional(.revision, .unsigned(bits: 8)) ?? 0),
            subsystemVendor: UInt16(try fields.optional(.subsystemVendor, .unsigned(bits: 16)) ?? 0),
            subsystemDevice: UInt16(try fields.optional(.subsystemDevice, .unsigned(bits: 16)) ?? 0),
            irq: UInt32(try fields.optional(.irq, .unsigned(bits: 32)) ?? 0),
            accessControl: acs, slot: slot, capabilities: standard, extendedCapabilities: extended)
    }

    /// The capabilities of `listed` that other keys stand for (`factBacked`)
    /// must be exactly `described`: a capability without its facts, or
    /// facts without their capability, would make a config space that lies.
    private static func requireSameKinds<C: Hashable>(_ listed: [C], _ described: [C], factBacked: Set<C>, key: DeviceKey,
                                                      _ names: [(name: String, value: C)]) throws(Problem) {
        let listedBacked = Set(listed).intersection(factBacked)
        let wanted = Set(described)
        guard listedBacked != wanted else { return }
        func spelled(_ set: Set<C>) -> String {
            names.filter { set.contains($0.value) }.map(\.name).joined(separator: ", ")
        }
        let reason = wanted.isSubset(of: listedBacked)
            ? "lists " + spelled(listedBacked.subtracting(wanted)) + " without the key that describes it"
            : "does not list " + spelled(wanted.subtracting(listedBacked)) + ", which the device's keys describe"
        throw Problem(reason, at: .key(key.rawValue))
    }

    /// `pcie_slot`: the Slot Capabilities of a root or downstream port.
    static func pcieSlot(_ json: JSON) throws(Problem) -> PCIFunctionSpec.Slot {
        let fields = try Fields<PCIeSlotKey>(json)
        return PCIFunctionSpec.Slot(number: UInt16(try fields.required(.number, .unsigned(bits: 13))),
                                    hotPlug: try fields.optional(.hotplug, .bool) ?? false)
    }

    /// A PF's SR-IOV capability.
    static func sriov(_ json: JSON) throws(Problem) -> MachineSpec.SRIOVSpec {
        let fields = try Fields<SRIOVKey>(json)
        return MachineSpec.SRIOVSpec(
            totalVFs: Int(try fields.required(.totalVFs, .unsigned(bits: 16))),
            offset: Int(try fields.optional(.offset, .unsigned(bits: 16)) ?? 1),
            stride: Int(try fields.optional(.stride, .unsigned(bits: 16)) ?? 1),
            vfDeviceID: UInt16(try fields.required(.vfDevice, .unsigned(bits: 16))),
            vfDriver: try fields.optional(.vfDriver, .name),
            driversAutoprobe: try fields.optional(.driversAutoprobe, .bool) ?? true)
    }

    /// A group label: any string, or a non-negative integer (so a captured
    /// machine's group ids can serve as labels).
    static func groupLabel(_ json: JSON) throws(Problem) -> String {
        switch json {
        case .string(let label): return label
        case .number: return String(try ValueDecoder.unsigned(bits: 64).decode(json))
        default: throw Problem.mismatch("a string or an integer label", json)
        }
    }

    /// A region with an inclusive end, as `reserved_regions` prints it.
    /// `registers`: a VT-d unit's DRHD address and CAP, ECAP and VER registers.
    static func vtdRegisters(_ json: JSON) throws(Problem) -> VTdRegisters {
        let fields = try Fields<RegistersKey>(json)
        return VTdRegisters(address: try fields.required(.address, .unsigned(bits: 64)),
                            capability: try fields.required(.cap, .unsigned(bits: 64)),
                            extendedCapability: try fields.required(.ecap, .unsigned(bits: 64)),
                            version: UInt32(try fields.required(.version, .unsigned(bits: 8))))
    }

    static func region(_ json: JSON) throws(Problem) -> ReservedRegion {
        let fields = try Fields<RegionKey>(json)
        let start = try fields.required(.start, .unsigned(bits: 64))
        let end = try fields.required(.end, .unsigned(bits: 64))
        let kind = try fields.required(.type, .choice(Names.regionKinds, "region type"))
        guard end >= start else {
            throw Problem(hexLiteral(end) + " is below start " + hexLiteral(start), at: .key(RegionKey.end.rawValue))
        }
        // The kernel stores a length, which cannot count 2^64 bytes either.
        guard end - start < .max else {
            throw Problem("a region cannot cover the whole 64-bit space", at: .key(RegionKey.end.rawValue))
        }
        return ReservedRegion(start: start, length: end - start + 1, kind: kind)
    }
}
