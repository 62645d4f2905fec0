import IOMMUCore
import SystemPackage
import Testing

// MARK: - Describing a machine compactly

/// One PCI function of a test machine, described the way the behaviour
/// reference talks about it: address, group label, boot driver, the IOMMU
/// driver's wish, `untrusted`, the reserved regions the IOMMU driver reports.
struct TestDevice: Sendable {
    var address: PCIAddress
    /// Devices with the same label share a group; ids come from the core.
    var group: String
    var driver: String?
    var wish: DomainType?
    var untrusted: Bool
    var regions: [ReservedRegion]
    var parent: PCIAddress?
    /// nil: a VFIO no-IOMMU device (no translation, no unit).
    var unit: String?

    init(_ address: String, group: String, driver: String? = nil, wish: DomainType? = nil,
         untrusted: Bool = false, regions: [ReservedRegion] = [.msiWindow],
         behind parent: String? = nil, unit: String? = "dmar0") {
        self.address = PCIAddress(testing: address)
        self.group = group
        self.driver = driver
        self.wish = wish
        self.untrusted = untrusted
        self.regions = regions
        self.parent = parent.map { PCIAddress(testing: $0) }
        self.unit = unit
    }

    var spec: MachineSpec.DeviceSpec {
        MachineSpec.DeviceSpec(address: address, vendorID: 0x8086, deviceID: 0x10d3, classCode: 0x020000,
                               parent: parent, unit: unit, group: group, driver: driver,
                               domainWish: wish, untrusted: untrusted, reservedRegions: regions)
    }
}

extension PCIAddress {
    /// `dddd:bb:dd.f` split by hand, so that a fixture does not depend on the
    /// parser under test (PCIAddressTests covers `PCIAddress.init?(_:)`).
    init(testing text: String) {
        let fields = text.split(whereSeparator: { $0 == ":" || $0 == "." }).map { UInt16($0, radix: 16)! }
        precondition(fields.count == 4, "not a PCI address: \(text)")
        self.init(domain: fields[0], bus: UInt8(fields[1]), device: UInt8(fields[2]), function: UInt8(fields[3]))
    }
}

extension ReservedRegion {
    /// The x86 interrupt window every VT-d device reports.
    static let msiWindow = ReservedRegion(start: 0xfee0_0000, length: 0x10_0000, kind: .msi)

    /// A region given by its inclusive bounds, as `reserved_regions` prints them.
    static func span(_ start: UInt64, _ end: UInt64, _ kind: Kind) -> ReservedRegion {
        ReservedRegion(start: start, length: end - start + 1, kind: kind)
    }
}

extension IOMMUDriverAbilities {
    /// Bare-metal VT-d: every domain type, deferred flush.
    static let intel = IOMMUDriverAbilities(family: .intel)
    /// QEMU's VT-d with caching mode, as in the oracle: strict invalidation forced.
    static let intelCachingMode = IOMMUDriverAbilities(family: .intel, forcesStrict: true)
}

extension IOMMUUnit {
    static func intel(_ name: String = "dmar0", _ abilities: IOMMUDriverAbilities = .intel) -> IOMMUUnit {
        IOMMUUnit(name: name, abilities: abilities, sysfsPath: "devices/virtual/iommu/" + name)
    }
}

extension PCIDriver {
    static let e1000e = PCIDriver(name: "e1000e", managesDMA: false)
    static let vfioPCI = PCIDriver(name: "vfio-pci", managesDMA: true)
    static let pciStub = PCIDriver(name: "pci-stub", managesDMA: true)
    static let pcieport = PCIDriver(name: "pcieport", managesDMA: true)

    /// Every driver a test machine may name.
    static let catalog: [PCIDriver] =
        [e1000e, vfioPCI, pciStub, pcieport]
        + ["e1000", "nvme", "ahci", "virtio-pci", "i915", "xhci_hcd"].map { PCIDriver(name: $0, managesDMA: false) }

    static func named(_ name: String) -> PCIDriver { catalog.first { $0.name == name }! }
}

extension MachineSpec {
    static func test(_ devices: [TestDevice], boot: BootOptions = BootOptions(commandLine: ""),
                     units: [IOMMUUnit] = [.intel()]) -> MachineSpec {
        MachineSpec(boot: boot, units: units, drivers: PCIDriver.catalog, devices: devices.map(\.spec))
    }
}

// MARK: - Driving a machine

extension Machine {
    static func boot(_ devices: [TestDevice], commandLine: String = "",
                     units: [IOMMUUnit] = [.intel()]) throws -> Machine {
        try Machine(spec: .test(devices, boot: BootOptions(commandLine: commandLine), units: units))
    }

    func device(_ address: String) throws -> Device {
        try #require(device(at: PCIAddress(testing: address)))
    }

    func group(of address: String) throws -> IOMMUGroup {
        try #require(try device(address).group)
    }

    @discardableResult
    func bind(_ address: String, to driver: String) throws -> Errno? {
        bind(try device(address), to: .named(driver))
    }

    @discardableResult
    func unbind(_ address: String) throws -> Errno? {
        unbind(try device(address))
    }

    /// Runs `body` and returns what it returned with the kernel log lines it added.
    func logging<T>(_ body: () throws -> T) rethrows -> (result: T, lines: [String]) {
        let before = log.texts.count
        let result = try body()
        return (result, Array(log.texts.dropFirst(before)))
    }
}

extension IOMMUGroup {
    /// A store of exactly these bytes (what kernfs hands `type`'s store).
    func write(bytes: [UInt8], as caller: any Credentials = FullyPrivileged()) -> Result<Int, Errno> {
        bytes.withUnsafeBytes { storeType($0, caller: caller) }
    }

    func write(_ text: String, as caller: any Credentials = FullyPrivileged()) -> Result<Int, Errno> {
        write(bytes: Array(text.utf8), as: caller)
    }
}

/// One write as the oracle prints it: the result of write(2), then `type` read back.
struct WriteOutcome: Equatable, Sendable, CustomStringConvertible {
    var result: Result<Int, Errno>
    var typeText: String

    static func ok(_ count: Int, _ type: String) -> WriteOutcome { .init(result: .success(count), typeText: type + "\n") }
    static func err(_ errno: Errno, _ type: String) -> WriteOutcome { .init(result: .failure(errno), typeText: type + "\n") }

    var description: String {
        switch result {
        case .success(let n): "ok \(n); type=\(typeText.dropLast())"
        case .failure(let e): "err \(e.rawValue); type=\(typeText.dropLast())"
        }
    }
}

/// Writes `data` to `group` and checks the result, the type read back and the
/// exact kernel log lines the write added (none unless `logs` says so).
func expectWrite(_ data: String, to group: IOMMUGroup, of machine: Machine, _ expected: WriteOutcome,
                 logs: [String] = [], as caller: any Credentials = FullyPrivileged(),
                 sourceLocation: SourceLocation = #_sourceLocation) {
    expectWrite(bytes: Array(data.utf8), to: group, of: machine, expected, logs: logs, as: caller,
                sourceLocation: sourceLocation)
}

func expectWrite(bytes: [UInt8], to group: IOMMUGroup, of machine: Machine, _ expected: WriteOutcome,
                 logs: [String] = [], as caller: any Credentials = FullyPrivileged(),
                 sourceLocation: SourceLocation = #_sourceLocation) {
    let (result, lines) = machine.logging { group.write(bytes: bytes, as: caller) }
    #expect(WriteOutcome(result: result, typeText: group.typeText) == expected, sourceLocation: sourceLocation)
    #expect(lines == logs, sourceLocation: sourceLocation)
}

// MARK: - The machine of §14

/// The machine §14 assumes: x86 with one VT-d unit, global default DMA-FQ,
/// groups 0–4 on the root bus and group 5 = {0000:03:00.0} behind the root
/// port 0000:00:1c.0.
enum Section14 {
    static let target = "0000:03:00.0"
    static let rootPort = "0000:00:1c.0"

    /// The device of group 5, with what a case varies.
    static func targetDevice(driver: String? = nil, wish: DomainType? = nil, untrusted: Bool = false,
                             regions: [ReservedRegion] = [.msiWindow]) -> TestDevice {
        TestDevice(target, group: "5", driver: driver, wish: wish, untrusted: untrusted,
                   regions: regions, behind: rootPort)
    }

    /// Another function of the target's slot; `group: "5"` puts it in group 5.
    static func sibling(_ function: Int, group: String = "5", driver: String? = nil,
                        regions: [ReservedRegion] = [.msiWindow]) -> TestDevice {
        TestDevice("0000:03:00.\(function)", group: group, driver: driver, regions: regions, behind: rootPort)
    }

    static let rootBus = [
        TestDevice("0000:00:00.0", group: "host"),
        TestDevice("0000:00:02.0", group: "gfx", driver: "i915"),
        TestDevice("0000:00:14.0", group: "usb", driver: "xhci_hcd"),
        TestDevice("0000:00:17.0", group: "sata", driver: "ahci"),
        TestDevice(rootPort, group: "port", driver: "pcieport"),
    ]

    static func machine(_ target: TestDevice = targetDevice(), siblings: [TestDevice] = [],
                        commandLine: String = "", abilities: IOMMUDriverAbilities = .intel,
                        rootPortGroup: String = "port") throws -> Machine {
        var devices = rootBus
        devices[4].group = rootPortGroup
        return try Machine.boot(devices + [target] + siblings, commandLine: commandLine,
                                units: [.intel("dmar0", abilities)])
    }

    /// Group 5 of a machine built by `machine`.
    static func group5(_ machine: Machine) throws -> IOMMUGroup {
        let group = try machine.group(of: target)
        try #require(group.id == 5)
        return group
    }
}

// MARK: - The oracle's machine

/// The QEMU q35 machine the 6.12 oracle transcript was printed on
/// (Tests/IntegrationTests/Fixtures/oracle/ORACLE.md): one VT-d unit with caching mode, so the
/// boot default is strict DMA.
enum Oracle612 {
    static let devices: [TestDevice] = {
        var list = [TestDevice("0000:00:00.0", group: "hb")]
        for port in 1...7 {
            list.append(TestDevice("0000:00:0\(port).0", group: "rp\(port)", driver: "pcieport"))
        }
        list += [
            TestDevice("0000:00:08.0", group: "rce", driver: "e1000"),
            // The ISA bridge gets VT-d's floppy/ISA 1:1 window (direct-relaxable 0–16 MiB).
            TestDevice("0000:00:1f.0", group: "ich9", regions: [.span(0, 0xff_ffff, .directRelaxable), .msiWindow]),
            TestDevice("0000:00:1f.2", group: "ich9", driver: "ahci"),
            TestDevice("0000:00:1f.3", group: "ich9"),
            TestDevice("0000:01:00.0", group: "nic1", driver: "e1000e", behind: "0000:00:01.0"),
            TestDevice("0000:02:00.0", group: "nvme", driver: "nvme", behind: "0000:00:02.0"),
            TestDevice("0000:03:00.0", group: "vnet", driver: "virtio-pci", behind: "0000:00:03.0"),
            TestDevice("0000:04:00.0", group: "pbr", behind: "0000:00:04.0"),
            TestDevice("0000:05:01.0", group: "pbr", driver: "e1000", behind: "0000:04:00.0"),
            TestDevice("0000:05:02.0", group: "pbr", driver: "e1000", behind: "0000:04:00.0"),
            TestDevice("0000:06:00.0", group: "mf", driver: "e1000e", behind: "0000:00:05.0"),
            TestDevice("0000:06:00.1", group: "mf", driver: "virtio-pci", behind: "0000:00:05.0"),
            // rp6 has ACS disabled: the endpoint behind it shares the port's group.
            TestDevice("0000:07:00.0", group: "rp6", driver: "e1000e", behind: "0000:00:06.0"),
            TestDevice("0000:08:00.0", group: "edu", behind: "0000:00:07.0"),
        ]
        return list
    }()

    /// The singleton e1000e the transcript's `transitions` and `extras` use (group 10).
    static let nic = "0000:01:00.0"

    static func machine() throws -> Machine {
        try Machine.boot(devices, units: [.intel("dmar0", .intelCachingMode)])
    }
}
