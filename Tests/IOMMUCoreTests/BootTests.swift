import IOMMUCore
import Testing

/// §9 the boot default type and its log lines; §1/§10 group ids and the
/// `Adding to iommu group` lines; machine descriptions the core refuses.
@Suite("boot (§1, §9, §10)")
struct BootTests {
    struct BootCase: Sendable, CustomTestStringConvertible {
        var name: String
        var boot: BootOptions
        var abilities: IOMMUDriverAbilities = .intel
        var type: String
        var lines: [String]
        var testDescription: String { name }
    }

    static let translated = "iommu: Default domain type: Translated"
    static let passthrough = "iommu: Default domain type: Passthrough"
    static let viaCommandLine = " (set via kernel command line)"
    static let lazy = "iommu: DMA domain TLB invalidation policy: lazy mode"
    static let strict = "iommu: DMA domain TLB invalidation policy: strict mode"
    static let batching = "DMAR: IOMMU batching disallowed due to virtualization"

    static let cases: [BootCase] = [
        .init(name: "no options", boot: .init(commandLine: ""), type: "DMA-FQ", lines: [translated, lazy]),
        .init(name: "iommu.strict=1", boot: .init(commandLine: "iommu.strict=1"), type: "DMA",
              lines: [translated, strict + viaCommandLine]),
        .init(name: "iommu.strict=on", boot: .init(commandLine: "iommu.strict=on"), type: "DMA",
              lines: [translated, strict + viaCommandLine]),
        .init(name: "iommu.strict=maybe is rejected by kstrtobool", boot: .init(commandLine: "iommu.strict=maybe"),
              type: "DMA-FQ", lines: [translated, lazy]),
        .init(name: "iommu=pt", boot: .init(commandLine: "iommu=pt"), type: "identity",
              lines: [passthrough + viaCommandLine]),
        .init(name: "iommu.passthrough=1", boot: .init(commandLine: "iommu.passthrough=1"), type: "identity",
              lines: [passthrough + viaCommandLine]),
        .init(name: "iommu.passthrough=0", boot: .init(commandLine: "iommu.passthrough=0"), type: "DMA-FQ",
              lines: [translated + viaCommandLine, lazy]),
        .init(name: "iommu=nopt", boot: .init(commandLine: "iommu=nopt"), type: "DMA-FQ",
              lines: [translated + viaCommandLine, lazy]),
        .init(name: "later options win", boot: .init(commandLine: "iommu=pt iommu.passthrough=0 iommu.strict=1"),
              type: "DMA", lines: [translated + viaCommandLine, strict + viaCommandLine]),
        .init(name: "Kconfig strict", boot: .init(configDefault: .strict), type: "DMA", lines: [translated, strict]),
        .init(name: "Kconfig strict, iommu.strict=0", boot: .init(commandLine: "iommu.strict=0", configDefault: .strict),
              type: "DMA-FQ", lines: [translated, lazy + viaCommandLine]),
        .init(name: "Kconfig passthrough", boot: .init(configDefault: .passthrough), type: "identity",
              lines: [passthrough]),
        .init(name: "Kconfig passthrough with memory encryption",
              boot: .init(commandLine: "", configDefault: .passthrough, memoryEncryption: true), type: "DMA-FQ",
              lines: ["iommu: Memory encryption detected - Disabling default IOMMU Passthrough", translated, lazy]),
        .init(name: "iommu=pt overrides the memory-encryption check",
              boot: .init(commandLine: "iommu=pt", configDefault: .passthrough, memoryEncryption: true),
              type: "identity", lines: [passthrough + viaCommandLine]),
        .init(name: "VT-d caching mode forces strict", boot: .init(commandLine: ""), abilities: .intelCachingMode,
              type: "DMA", lines: [translated, lazy, batching]),
        .init(name: "VT-d caching mode with iommu.strict=0", boot: .init(commandLine: "iommu.strict=0"),
              abilities: .intelCachingMode, type: "DMA", lines: [translated, lazy + viaCommandLine, batching]),
        .init(name: "VT-d caching mode leaves passthrough alone", boot: .init(commandLine: "iommu=pt"),
              abilities: .intelCachingMode, type: "identity", lines: [passthrough + viaCommandLine, batching]),
    ]

    @Test("§9 boot default type and the lines printed before the first group", arguments: cases)
    func bootDefault(_ c: BootCase) throws {
        let spec = MachineSpec.test([TestDevice("0000:00:02.0", group: "gfx")], boot: c.boot,
                                    units: [.intel("dmar0", c.abilities)])
        let machine = try Machine(spec: spec)
        #expect(machine.log.texts == c.lines + ["pci 0000:00:02.0: Adding to iommu group 0"])
        #expect(try machine.group(of: "0000:00:02.0").typeText == c.type + "\n")
    }

    @Test("§9 VT-d prints the caching-mode line once (pr_info_once), however many units force strict")
    func batchingLineOnce() throws {
        let units = [IOMMUUnit.intel("dmar0", .intelCachingMode), .intel("dmar1", .intelCachingMode)]
        let machine = try Machine.boot([TestDevice("0000:00:02.0", group: "a"),
                                        TestDevice("0000:00:03.0", group: "b", unit: "dmar1")], units: units)
        #expect(machine.log.texts.filter { $0 == Self.batching }.count == 1)
    }

    @Test("§9 AMD-Vi with NpCache forces strict with its own line, `AMD-Vi: Using strict mode due to virtualization`")
    func amdStrictLine() throws {
        let unit = IOMMUUnit(name: "ivhd0", abilities: IOMMUDriverAbilities(family: .amd, forcesStrict: true),
                             sysfsPath: "devices/pci0000:00/0000:00:00.2/iommu/ivhd0")
        let machine = try Machine.boot([TestDevice("0000:00:03.0", group: "a", unit: "ivhd0")], units: [unit])
        #expect(Array(machine.log.texts.prefix(3)) == [Self.translated, Self.lazy,
                                                "AMD-Vi: Using strict mode due to virtualization"])
        #expect(try machine.group(of: "0000:00:03.0").typeText == "DMA\n")
    }

    // MARK: Group ids

    @Test("§1 group ids are the lowest free in probe order (bus by bus, bridges depth-first), not spec order")
    func groupIDsFollowProbeOrder() throws {
        let devices = [
            TestDevice("0000:05:00.0", group: "behind-port-2", behind: "0000:00:1d.0"),
            TestDevice("0000:00:1d.0", group: "port-2", driver: "pcieport"),
            TestDevice("0000:03:00.1", group: "shared", behind: "0000:00:1c.0"),
            TestDevice("0000:00:1c.0", group: "port-1", driver: "pcieport"),
            TestDevice("0000:03:00.0", group: "shared", behind: "0000:00:1c.0"),
            TestDevice("0000:00:02.0", group: "gfx"),
            TestDevice("0000:04:00.0", group: "behind-03", behind: "0000:03:00.0"),
            TestDevice("0000:00:1f.3", group: "gfx"),
        ]
        let expected = [
            "pci 0000:00:02.0: Adding to iommu group 0",
            "pci 0000:00:1c.0: Adding to iommu group 1",
            "pci 0000:00:1d.0: Adding to iommu group 2",
            "pci 0000:00:1f.3: Adding to iommu group 0",
            "pci 0000:03:00.0: Adding to iommu group 3",
            "pci 0000:03:00.1: Adding to iommu group 3",
            "pci 0000:04:00.0: Adding to iommu group 4",
            "pci 0000:05:00.0: Adding to iommu group 5",
        ]
        for order in [devices, devices.reversed()] {
            let machine = try Machine.boot(order)
            #expect(machine.log.texts.filter { $0.contains("Adding") } == expected)
            #expect(machine.groups.map(\.id) == Array(0...5))
            #expect(machine.devices.map(\.address.description) == expected.map { String($0.dropFirst(4).prefix(12)) })
        }
    }

    @Test("§14.6 the device's directory follows the bridge it sits behind")
    func case6SysfsPath() throws {
        let machine = try Section14.machine()
        #expect(try machine.device(Section14.target).sysfsPath == "devices/pci0000:00/0000:00:1c.0/0000:03:00.0")
        #expect(try machine.device("0000:00:02.0").sysfsPath == "devices/pci0000:00/0000:00:02.0")
    }

    @Test("§14 fixture: the machine the numbered cases assume has group 5 = {0000:03:00.0}")
    func section14Fixture() throws {
        let machine = try Section14.machine()
        #expect(machine.groups.map(\.id) == Array(0...5))
        #expect(try Section14.group5(machine).snapshot.devices == [PCIAddress(testing: Section14.target)])
        #expect(machine.groups.allSatisfy { $0.typeText == "DMA-FQ\n" })
    }

    // MARK: Descriptions the core refuses

    @Test("machine descriptions the core cannot boot", arguments: [
        ("a device listed twice", [TestDevice("0000:00:02.0", group: "a"), TestDevice("0000:00:02.0", group: "b")]),
        ("an unknown IOMMU unit", [TestDevice("0000:00:02.0", group: "a", unit: "dmar9")]),
        ("an unknown driver", [TestDevice("0000:00:02.0", group: "a", driver: "no-such-driver")]),
        ("a parent that is not listed", [TestDevice("0000:02:00.0", group: "a", behind: "0000:00:1c.0")]),
    ])
    func refusedSpecs(_ what: String, devices: [TestDevice]) {
        #expect(throws: MachineSpecError.self, "\(what)") { try Machine.boot(devices) }
    }
}
