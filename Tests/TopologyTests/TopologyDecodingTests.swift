import Foundation
import IOMMUCore
import Testing
import Topology


private func decode(_ json: String) throws -> MachineSpec {
    try Topology.decode(json.utf8, source: "t.json")
}

private func members(_ machine: Machine) -> [[String]] {
    machine.groups.map { $0.snapshot.devices.map(\.description) }
}

@Test func integerAndStringLabelsNameGroupsAndIdsFollowProbeOrder() throws {
    let spec = try decode(D.machine(devices: [
        D.device("00:03.0", group: "7"),
        D.device("00:02.0", group: "5"),
        D.device("00:04.0", group: #""7""#),
    ]))
    #expect(spec.devices.map(\.group) == ["7", "5", "7"])
    // 00:02.0 probes first, so label 5 becomes group 0.
    #expect(members(try Machine(spec: spec)) == [["0000:00:02.0"], ["0000:00:03.0", "0000:00:04.0"]])
}

@Test func shortAndUppercaseAddressesAreNormalised() throws {
    let spec = try decode(D.machine(devices: [
        D.bridge("00:1C.0"),
        D.device("02:00.0", more: #""parent": "0000:00:1c.0""#),
        D.device("0001:00:1F.3", group: #""h""#),
    ]))
    #expect(spec.devices.map(\.address.description) == ["0000:00:1c.0", "0000:02:00.0", "0001:00:1f.3"])
    #expect(spec.devices[1].parent == PCIAddress(bus: 0, device: 0x1c, function: 0))
    let machine = try Machine(spec: spec)
    #expect(machine.device(at: PCIAddress(bus: 2, device: 0, function: 0))?.sysfsPath
            == "devices/pci0000:00/0000:00:1c.0/0000:02:00.0")
}

@Test func numbersMayBeIntegersOrHexStringsInEitherCase() throws {
    let spec = try decode(D.machine(devices: [
        D.device("00:02.0", vendor: "32902", class: #""0x0C0330""#,
                 more: #""reserved_regions": [ { "start": 4096, "end": "0X1FFF", "type": "direct" } ]"#),
    ]))
    #expect(spec.devices[0].vendorID == 0x8086)
    #expect(spec.devices[0].classCode == 0x0c0330)
    #expect(spec.devices[0].reservedRegions == [ReservedRegion(start: 0x1000, length: 0x1000, kind: .direct)])
}

@Test func amdUnitsSitUnderTheirOwnPCIFunction() throws {
    let ivhd0 = #""ivhd0""#
    let spec = try decode(D.machine(
        units: [#"{ "name": "ivhd0", "family": "amd", "pci_function": "00:00.2", "#
                + #""domain_types": ["identity", "DMA", "DMA-FQ"], "deferred_flush": false, "#
                + #""unsupported_type_errno": "EOPNOTSUPP" }"#,
                #"{ "name": "ivhd1", "family": "amd", "pci_function": "0000:01:00.2" }"#],
        devices: [
            D.device("00:00.2", class: #""0x080600""#, iommu: ivhd0, group: "0"),
            D.device("00:01.0", class: #""0x060400""#, iommu: ivhd0, group: "1"),
            D.device("01:00.2", class: #""0x080600""#, iommu: ivhd0, group: "2", more: #""parent": "00:01.0""#),
        ]))
    #expect(spec.units.map(\.sysfsPath) == ["devices/pci0000:00/0000:00:00.2/iommu/ivhd0",
                                            "devices/pci0000:00/0000:00:01.0/0000:01:00.2/iommu/ivhd1"])
    let abilities = spec.units[0].abilities
    #expect(abilities.family == .amd)
    #expect(abilities.domainTypes == [.identity, .dma, .dmaFQ])
    #expect(!abilities.deferredFlush)
    #expect(abilities.unsupportedTypeErrno == .operationNotSupported)
    #expect(spec.units[1].abilities == IOMMUDriverAbilities(family: .amd))
}

@Test func unitRegionsFollowEachDevicesOwnAndMergeInTheGroup() throws {
    let spec = try decode(D.machine(
        units: [#"{ "name": "dmar0", "family": "intel", "#
                + #""reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }"#],
        devices: [
            D.device("00:14.0", more: #""reserved_regions": [ { "start": "0x3e2e0000", "end": "0x3e2fffff", "type": "direct-relaxable" } ]"#),
            D.device("00:14.2"),
            D.device("00:15.0", iommu: "null", group: #""none""#),
        ]))
    let msi = ReservedRegion(start: 0xfee0_0000, length: 0x10_0000, kind: .msi)
    #expect(spec.devices[0].reservedRegions == [ReservedRegion(start: 0x3e2e_0000, length: 0x2_0000, kind: .directRelaxable), msi])
    #expect(spec.devices[1].reservedRegions == [msi])
    #expect(spec.devices[2].reservedRegions == [])  // no IOMMU, no unit regions
    let group = try #require(try Machine(spec: spec).group(id: 0))
    #expect(group.reservedRegionsText == "0x000000003e2e0000 0x000000003e2fffff direct-relaxable\n"
            + "0x00000000fee00000 0x00000000feefffff msi\n")
}

@Test func aNoIOMMUDeviceHasNoGroupUntilVFIOProbesItInNoIOMMUMode() throws {
    let spec = try decode(D.machine(units: [], devices: [D.device("00:02.0", iommu: "null", more: #""driver": "vfio-pci""#)]))
    #expect(spec.devices[0].unit == nil)
    // vfio_group_find_or_alloc: EINVAL without the mode; the probe fails.
    let off = try Machine(spec: spec)
    #expect(off.groups.isEmpty && off.devices[0].driver == nil)
    var on = spec
    on.boot = BootOptions(commandLine: "vfio.enable_unsafe_noiommu_mode=Y")
    let group = try #require(try Machine(spec: on).group(id: 0))
    #expect(group.name == "vfio-noiommu")
    #expect(group.typeText == "unknown\n")
}

@Test func driversArePredeclaredDeclaredOrImplied() throws {
    let spec = try decode(D.machine(
        drivers: [#"{ "name": "my-stub", "manages_dma": true }"#, #"{ "name": "pcieport", "manages_dma": false }"#],
        devices: [D.device("00:02.0", more: #""driver": "e1000""#)]))
    #expect(spec.drivers == [
        PCIDriver(name: "e1000", managesDMA: false),
        PCIDriver(name: "my-stub", managesDMA: true),
        PCIDriver(name: "pci-stub", managesDMA: true),
        PCIDriver(name: "pcieport", managesDMA: false),
        PCIDriver(name: "vfio-pci", managesDMA: true),
    ])
}

@Test func deviceFlagsReachTheSpec() throws {
    let spec = try decode(D.machine(devices: [
        D.device("00:1f.3", more: #""def_domain_type": "identity", "untrusted": true, "driver": null, "parent": null"#),
    ]))
    #expect(spec.devices[0].domainWish == .identity)
    #expect(spec.devices[0].untrusted)
    #expect(spec.devices[0].driver == nil)
    #expect(spec.devices[0].parent == nil)
}

@Test func kernelOptionsAreOptionalAndPassedToBootOptions() throws {
    #expect(try decode(D.machine(devices: [])).boot == BootOptions())
    let spec = try decode(#"{ "kernel": { "command_line": "quiet iommu=pt", "config_default": "strict", "#
                          + #""memory_encryption": true }, "iommu_units": [], "devices": [] }"#)
    #expect(spec.boot == BootOptions(commandLine: "iommu=pt", configDefault: .strict, memoryEncryption: true))
}

@Test func stringsMayUseEveryJSONEscape() throws {
    let spec = try decode(D.machine(devices: [D.device("00:02.0", group: #""a\u0062\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#)]))
    #expect(spec.devices[0].group == "ab\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{1F600}")
}

@Test func loadsAFileAndAcceptsEveryByteCollection() throws {
    let json = D.machine(devices: [D.device("00:02.0")])
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("topology-\(UUID().uuidString).json")
    try Data(json.utf8).write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    #expect(try Topology.load(contentsOf: url.path).devices.count == 1)
    #expect(try Topology.decode(Data(json.utf8), source: "data").devices.count == 1)
    #expect(try Topology.decode(Array(json.utf8), source: "bytes").devices.count == 1)
    // Not contiguous: decoded through a copy.
    #expect(try Topology.decode(json.utf8.reversed().reversed(), source: "lazy").devices.count == 1)
}

/// The example of the README's topology section, verbatim.
private let readmeExample = #"""
    {
      "kernel": { "command_line": "intel_iommu=on", "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel",
          "reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }
      ],
      "devices": [
        { "address": "0000:00:00.0", "vendor": "0x8086", "device": "0x3e30", "class": "0x060000",
          "iommu": "dmar0", "group": 0 },
        { "address": "0000:00:14.0", "vendor": "0x8086", "device": "0xa36d", "class": "0x0c0330",
          "iommu": "dmar0", "group": 1, "driver": "xhci_hcd",
          "reserved_regions": [ { "start": "0x3e2e0000", "end": "0x3e2fffff", "type": "direct-relaxable" } ] },
        { "address": "0000:00:1c.0", "vendor": "0x8086", "device": "0xa338", "class": "0x060400",
          "iommu": "dmar0", "group": 2, "driver": "pcieport" },
        { "address": "0000:02:00.0", "vendor": "0x144d", "device": "0xa808", "class": "0x010802",
          "parent": "0000:00:1c.0", "iommu": "dmar0", "group": 2, "driver": "nvme" },
        { "address": "0000:00:1f.3", "vendor": "0x8086", "device": "0xa348", "class": "0x040300",
          "iommu": "dmar0", "group": 3, "driver": "snd_hda_intel", "def_domain_type": "identity" }
      ]
    }
    """#

@Test func readmeExampleBootsAsDocumented() throws {
    let machine = try Machine(spec: try Topology.decode(readmeExample.utf8, source: "README"))
    #expect(members(machine) == [["0000:00:00.0"], ["0000:00:14.0"], ["0000:00:1c.0", "0000:02:00.0"], ["0000:00:1f.3"]])
    #expect(machine.groups.map(\.typeText) == ["DMA-FQ\n", "DMA-FQ\n", "DMA-FQ\n", "identity\n"])
    let ownerCount = try #require(machine.group(id: 2)).snapshot.ownerCount
    #expect(ownerCount == 1)  // nvme holds the group: type writes get EPERM
}

@Test func theProfileKeyChoosesTheKernelAndAnExplicitProfileOverridesIt() throws {
    let json = #"{ "profile": "linux-6.1", "iommu_units": [ { "name": "dmar0", "family": "intel" } ], "#
        + #""devices": [ { "address": "00:02.0", "vendor": 1, "device": 2, "class": 3, "iommu": "dmar0", "group": 0 } ] }"#
    let document = try TopologyDocument(json.utf8, source: "t.json")
    #expect(document.spec.profile == .linux6_1)
    // 6.1's policy lines keep the space before the empty suffix.
    #expect(try document.boot().profile == .linux6_1)
    #expect(try document.boot().log.texts.first == "iommu: Default domain type: Translated ")
    #expect(try document.boot(profile: .linux6_12).profile == .linux6_12)
    #expect(try decode(D.machine(devices: [D.device("00:02.0")])).profile == nil)
    #expect(try TopologyDocument(D.machine(devices: [D.device("00:02.0")]).utf8, source: "t.json").boot().profile == .current)
}
