import Testing
import Topology

/// A document that must be rejected, with the exact message.
struct BadDocument: Sendable, CustomTestStringConvertible {
    var name: String
    var json: String
    var message: String
    var testDescription: String { name }
}

let badDocuments: [BadDocument] = [
    // Hot-plug slots.
    BadDocument(name: "slot on a bus no device is on",
                json: slotMachine(#"{ "name": "0", "address": "0000:05:00", "driver": "acpiphp" }"#),
                message: #"t.json: slots[0].address: no listed device is on bus 0000:05"#),
    BadDocument(name: "slot address with a function",
                json: slotMachine(#"{ "name": "0", "address": "0000:00:02.0", "driver": "acpiphp" }"#),
                message: #"t.json: slots[0].address: "0000:00:02.0" is not a slot address (expected dddd:bb:dd)"#),
    BadDocument(name: "two slots with one name",
                json: slotMachine(#"{ "name": "0", "address": "00:02", "driver": "acpiphp" }, { "name": "0", "address": "00:03", "driver": "acpiphp" }"#),
                message: #"t.json: slots[1].name: "0" is already the name of slots[0]"#),
    BadDocument(name: "slot driver other than acpiphp",
                json: slotMachine(#"{ "name": "0", "address": "00:02", "driver": "pciehp" }"#),
                message: #"t.json: slots[0].driver: unknown hot-plug driver "pciehp" (expected one of: acpiphp)"#),
    // One object at a time.
    BadDocument(name: "bad address",
                json: D.machine(devices: [D.device("0000:00:1g.0")]),
                message: #"t.json: devices[0].address: "0000:00:1g.0" is not a PCI address (expected dddd:bb:dd.f)"#),
    BadDocument(name: "function out of range",
                json: D.machine(devices: [D.device("00:02.8")]),
                message: #"t.json: devices[0].address: "00:02.8" is not a PCI address (expected dddd:bb:dd.f)"#),
    BadDocument(name: "unknown key",
                json: D.machine(devices: [D.device("00:02.0", more: #""drvier": "e1000""#)]),
                message: #"t.json: devices[0]: unknown key "drvier" (expected one of: address, vendor, device, class, "#
                    + "parent, iommu, group, driver, def_domain_type, untrusted, reserved_regions, "
                    + "native_driver, ats, reset_methods, reset_ms, sriov, attach_deferred, multifunction, pcie_type, "
                    + "revision, subsystem_vendor, subsystem_device, irq, acs, pcie_slot, capabilities, extended_capabilities, "
                    + "bars, rom, windows)"),
    BadDocument(name: "a BAR base not aligned to its size",
                json: D.machine(devices: [D.device("00:02.0", more: #""bars": [ { "index": 0, "type": "mem", "base": "0xfd001000", "size": "0x4000" } ]"#)]),
                message: "t.json: devices[0].bars[0].base: the base is not aligned to the size"),
    BadDocument(name: "a 64-bit BAR overlapping the next",
                json: D.machine(devices: [D.device("00:02.0", more: #""bars": [ { "index": 0, "type": "mem", "64bit": true, "base": "0xfd000000", "size": "0x4000" }, { "index": 1, "type": "io", "base": "0xc000", "size": "0x20" } ]"#)]),
                message: "t.json: devices[0].bars: BAR 1 is described twice (a 64-bit BAR also takes the next one)"),
    BadDocument(name: "windows on an endpoint",
                json: D.machine(devices: [D.device("00:02.0", more: #""windows": { "mem": { "base": "0xfd000000", "limit": "0xfd0fffff" } }"#)]),
                message: "t.json: devices[0].windows: only a PCI-to-PCI bridge (class 0x0604) has windows"),
    BadDocument(name: "sriov capability without the sriov key",
                json: D.machine(devices: [D.device("00:02.0", more: #""pcie_type": "endpoint", "extended_capabilities": ["sriov"]"#)]),
                message: "t.json: devices[0].extended_capabilities: lists sriov without the key that describes it"),
    BadDocument(name: "pcie_type without the pcie capability",
                json: D.machine(devices: [D.device("00:02.0", more: #""pcie_type": "endpoint", "capabilities": ["pm"]"#)]),
                message: "t.json: devices[0].capabilities: does not list pcie, which the device's keys describe"),
    BadDocument(name: "a slot on an endpoint",
                json: D.machine(devices: [D.device("00:02.0", more: #""pcie_type": "endpoint", "pcie_slot": { "number": 1 }"#)]),
                message: "t.json: devices[0].pcie_slot: only a root port or a downstream port implements a slot"),
    BadDocument(name: "repeated key",
                json: D.machine(devices: [D.device("00:02.0", more: #""group": 2"#)]),
                message: #"t.json: devices[0]: key "group" appears twice"#),
    BadDocument(name: "missing key",
                json: #"{ "iommu_units": [], "devices": [ { "address": "00:02.0" } ] }"#,
                message: #"t.json: devices[0]: missing key "vendor""#),
    BadDocument(name: "missing iommu key (null must be explicit)",
                json: #"{ "iommu_units": [], "devices": [ { "address": "00:02.0", "vendor": 1, "device": 2, "class": 3, "group": 0 } ] }"#,
                message: #"t.json: devices[0]: missing key "iommu""#),
    BadDocument(name: "wrong type of a scalar",
                json: D.machine(devices: [D.device("00:02.0", vendor: "true")]),
                message: #"t.json: devices[0].vendor: expected an integer or a "0x" hex string, found true"#),
    BadDocument(name: "wrong type of a container",
                json: #"{ "iommu_units": { "name": "dmar0" }, "devices": [] }"#,
                message: "t.json: iommu_units: expected an array, found an object"),
    BadDocument(name: "number where a name belongs",
                json: D.machine(units: [#"{ "name": 5, "family": "intel" }"#], devices: []),
                message: "t.json: iommu_units[0].name: expected a string, found 5"),
    BadDocument(name: "document is not an object",
                json: "[]",
                message: "t.json: expected an object, found an array"),
    BadDocument(name: "hex without 0x",
                json: D.machine(devices: [D.device("00:02.0", vendor: #""8086""#)]),
                message: #"t.json: devices[0].vendor: "8086" is not a hex number (expected "0x" and at most 16 hex digits)"#),
    BadDocument(name: "vendor wider than 16 bits",
                json: D.machine(devices: [D.device("00:02.0", vendor: #""0x18086""#)]),
                message: #"t.json: devices[0].vendor: "0x18086" does not fit in 16 bits"#),
    BadDocument(name: "fractional group label",
                json: D.machine(devices: [D.device("00:02.0", group: "1.5")]),
                message: "t.json: devices[0].group: expected a non-negative integer, found 1.5"),
    BadDocument(name: "region end below start",
                json: D.machine(devices: [D.device("00:02.0", more: #""reserved_regions": [ { "start": "0x2000", "end": "0x1fff", "type": "reserved" } ]"#)]),
                message: "t.json: devices[0].reserved_regions[0].end: 0x1fff is below start 0x2000"),
    BadDocument(name: "region over the whole 64-bit space",
                json: D.machine(devices: [D.device("00:02.0", more: #""reserved_regions": [ { "start": 0, "end": "0xffffffffffffffff", "type": "reserved" } ]"#)]),
                message: "t.json: devices[0].reserved_regions[0].end: a region cannot cover the whole 64-bit space"),
    BadDocument(name: "unknown region type",
                json: D.machine(devices: [D.device("00:02.0", more: #""reserved_regions": [ { "start": 0, "end": 1, "type": "mis" } ]"#)]),
                message: #"t.json: devices[0].reserved_regions[0].type: unknown region type "mis" (expected one of: direct, direct-relaxable, reserved, msi, sw-msi)"#),
    BadDocument(name: "def_domain_type the driver cannot answer",
                json: D.machine(devices: [D.device("00:02.0", more: #""def_domain_type": "blocked""#)]),
                message: #"t.json: devices[0].def_domain_type: unknown def_domain_type "blocked" (expected one of: identity, DMA)"#),
    BadDocument(name: "driver name with a slash",
                json: D.machine(devices: [D.device("00:02.0", more: #""driver": "a/b""#)]),
                message: #"t.json: devices[0].driver: "a/b" cannot be a sysfs name (it must be non-empty, without '/')"#),
    BadDocument(name: "unknown config_default",
                json: #"{ "kernel": { "config_default": "lazzy" }, "iommu_units": [], "devices": [] }"#,
                message: #"t.json: kernel.config_default: unknown config_default "lazzy" (expected one of: lazy, strict, passthrough)"#),
    BadDocument(name: "unknown kernel profile",
                json: #"{ "profile": "linux-6.3", "iommu_units": [], "devices": [] }"#,
                message: #"t.json: profile: unknown kernel profile "linux-6.3" (expected one of: linux-6.1, linux-6.4, "#
                    + "linux-6.5, linux-6.6, linux-6.7, linux-6.8, linux-6.9, linux-6.10, linux-6.11, linux-6.12, linux-7.1)"),
    BadDocument(name: "unknown errno",
                json: D.machine(units: [#"{ "name": "dmar0", "family": "intel", "unsupported_type_errno": "ENOMEN" }"#], devices: []),
                message: #"t.json: iommu_units[0].unsupported_type_errno: unknown errno "ENOMEN" (expected one of: ENOMEM, EOPNOTSUPP, ENODEV, EINVAL, ENOSPC, EBUSY)"#),
    BadDocument(name: "DMA-FQ without DMA",
                json: D.machine(units: [#"{ "name": "dmar0", "family": "intel", "domain_types": ["identity", "DMA-FQ"] }"#], devices: []),
                message: #"t.json: iommu_units[0].domain_types: "DMA-FQ" is listed without "DMA" (a flush queue is a feature of a DMA domain)"#),
    BadDocument(name: "AMD unit without its PCI function",
                json: D.machine(units: [#"{ "name": "ivhd0", "family": "amd" }"#], devices: []),
                message: #"t.json: iommu_units[0]: missing key "pci_function" (an AMD unit sits under its own PCI function)"#),
    BadDocument(name: "Intel unit with a PCI function",
                json: D.machine(units: [#"{ "name": "dmar0", "family": "intel", "pci_function": "00:00.2" }"#], devices: []),
                message: "t.json: iommu_units[0].pci_function: an Intel unit has no PCI function (it is a virtual device); remove the key"),

    // Across objects.
    BadDocument(name: "unknown unit",
                json: D.machine(devices: [D.device("00:02.0"), D.device("00:03.0", iommu: #""dmar9""#)]),
                message: #"t.json: devices[1].iommu: unknown IOMMU unit "dmar9" (units: dmar0)"#),
    BadDocument(name: "unit named when none is declared",
                json: D.machine(units: [], devices: [D.device("00:02.0")]),
                message: #"t.json: devices[0].iommu: unknown IOMMU unit "dmar0" (no units are declared)"#),
    BadDocument(name: "duplicate device",
                json: D.machine(devices: [D.device("0000:00:02.0"), D.device("00:02.0")]),
                message: "t.json: devices[1].address: 0000:00:02.0 is already listed as devices[0]"),
    BadDocument(name: "duplicate unit name",
                json: D.machine(units: [D.intelUnit, D.intelUnit], devices: []),
                message: #"t.json: iommu_units[1].name: "dmar0" is already the name of iommu_units[0]"#),
    BadDocument(name: "duplicate driver declaration",
                json: D.machine(drivers: [#"{ "name": "e1000" }"#, #"{ "name": "e1000", "manages_dma": true }"#], devices: []),
                message: #"t.json: drivers[1].name: "e1000" is already declared by drivers[0]"#),
    BadDocument(name: "parent not listed",
                json: D.machine(devices: [D.device("02:00.0", more: #""parent": "00:1c.0""#)]),
                message: "t.json: devices[0].parent: 0000:00:1c.0 is not a listed device"),
    BadDocument(name: "parent not a bridge",
                json: D.machine(devices: [D.device("00:1f.0", class: #""0x060100""#),
                                          D.device("01:00.0", more: #""parent": "00:1f.0""#)]),
                message: "t.json: devices[1].parent: 0000:00:1f.0 is not a PCI bridge (its class is 0x060100; "
                    + "a bridge's is 0x0604xx, 0x0607xx or 0x0609xx)"),
    BadDocument(name: "parent in another PCI domain",
                json: D.machine(devices: [D.bridge("00:1c.0"), D.device("0001:02:00.0", more: #""parent": "00:1c.0""#)]),
                message: "t.json: devices[1].parent: 0000:00:1c.0 is in another PCI domain than 0001:02:00.0"),
    BadDocument(name: "one bus behind two bridges",
                json: D.machine(devices: [D.bridge("00:1c.0"), D.bridge("00:1c.4"),
                                          D.device("02:00.0", more: #""parent": "00:1c.0""#),
                                          D.device("02:01.0", more: #""parent": "00:1c.4""#)]),
                message: "t.json: devices[3].parent: bus 0000:02 is behind 0000:00:1c.0 (as devices[2] says), not 0000:00:1c.4"),
    BadDocument(name: "device on its bridge's own bus",
                json: D.machine(devices: [D.bridge("00:1c.0"), D.device("00:02.0", more: #""parent": "00:1c.0""#)]),
                message: "t.json: devices[1].parent: bus 0000:00 is behind the root (as devices[0] says), not 0000:00:1c.0"),
    BadDocument(name: "bridges in a cycle",
                json: D.machine(devices: [D.bridge("01:00.0", more: #""parent": "02:00.0""#),
                                          D.bridge("02:00.0", more: #""parent": "01:00.0""#)]),
                message: "t.json: devices[0].parent: the bridges form a cycle: 0000:01:00.0 -> 0000:02:00.0 -> 0000:01:00.0"),
    BadDocument(name: "group spanning units",
                json: D.machine(units: [D.intelUnit, #"{ "name": "dmar1", "family": "intel" }"#],
                                devices: [D.bridge("00:1c.0", group: #""a""#),
                                          D.device("02:00.0", iommu: #""dmar1""#, group: #""a""#, more: #""parent": "00:1c.0""#)]),
                message: #"t.json: devices[1].group: group "a" spans IOMMU units: 0000:00:1c.0 (devices[0]) is behind dmar0, "#
                    + "0000:02:00.0 behind dmar1"),
    BadDocument(name: "group mixing a unit and no IOMMU",
                json: D.machine(devices: [D.device("00:02.0"), D.device("00:03.0", iommu: "null")]),
                message: #"t.json: devices[1].group: group "g" spans IOMMU units: 0000:00:02.0 (devices[0]) is behind dmar0, "#
                    + "0000:00:03.0 behind no IOMMU"),
    BadDocument(name: "AMD function not listed",
                json: D.machine(units: [#"{ "name": "ivhd0", "family": "amd", "pci_function": "00:00.2" }"#], devices: []),
                message: "t.json: iommu_units[0].pci_function: 0000:00:00.2 is not a listed device"),

    // Malformed JSON, located by line and column.
    BadDocument(name: "trailing comma",
                json: #"{ "iommu_units": [], "devices": [], }"#,
                message: "t.json: line 1, column 37: unexpected '}' where a key should start"),
    BadDocument(name: "missing comma between members",
                json: "{\n  \"devices\": [\n    { \"address\": \"00:02.0\"\n  ]\n}",
                message: "t.json: line 4, column 3: unexpected ']' after an object member (expected ',' or '}')"),
    BadDocument(name: "unterminated string",
                json: #"{ "devices": [ { "address": "00:02.0 } ] }"#,
                message: "t.json: line 1, column 29: unterminated string"),
    BadDocument(name: "empty document",
                json: "",
                message: "t.json: line 1, column 1: unexpected end of input where a value should start"),
    BadDocument(name: "bare word",
                json: #"{ "iommu_units": nul }"#,
                message: "t.json: line 1, column 18: unexpected 'n' where a value should start"),
    BadDocument(name: "bad escape",
                json: #"{ "a\q": 1 }"#,
                message: "t.json: line 1, column 5: invalid escape sequence"),
    BadDocument(name: "lone surrogate",
                json: #"{ "\ud800": 1 }"#,
                message: #"t.json: line 1, column 4: unpaired UTF-16 surrogate in a \u escape"#),
    BadDocument(name: "VT-d registers on an AMD unit",
                json: D.machine(units: [#"{ "name": "ivhd0", "family": "amd", "pci_function": "00:00.2", "registers": { "address": 1, "cap": 2, "ecap": 3, "version": 16 } }"#],
                                devices: [D.device("00:00.2", more: #""group": 0"#)]),
                message: "t.json: iommu_units[0].registers: only an Intel unit shows VT-d registers; remove the key"),
    BadDocument(name: "a VT-d register missing",
                json: D.machine(units: [#"{ "name": "dmar0", "family": "intel", "registers": { "address": 1, "cap": 2, "version": 16 } }"#],
                                devices: []),
                message: #"t.json: iommu_units[0].registers: missing key "ecap""#),
    BadDocument(name: "leading zero",
                json: #"{ "a": 01 }"#,
                message: "t.json: line 1, column 9: unexpected '1' after an object member (expected ',' or '}')"),
    BadDocument(name: "text after the document",
                json: "{} {}",
                message: "t.json: line 1, column 4: unexpected '{' after the document"),
    BadDocument(name: "column counts characters, not bytes",
                json: "{ \"é\": tru }",
                message: "t.json: line 1, column 8: unexpected 't' where a value should start"),
]

@Test(arguments: badDocuments)
func rejectsWithAPreciseMessage(_ document: BadDocument) {
    let error = #expect(throws: TopologyError.self) { try Topology.decode(document.json.utf8, source: "t.json") }
    #expect(error?.description == document.message)
}

/// Bytes that are not UTF-8, inside strings with and without escapes: an
/// error at the first bad byte, never U+FFFD.
private let notUTF8: [(bytes: [UInt8], message: String)] = [
    ([0x7B, 0x22, 0x61, 0xFF, 0x22, 0x3A, 0x31, 0x7D], "line 1, column 4: invalid UTF-8 in a string (byte 0xff)"),
    (Array(#"{"k": "é\n"#.utf8) + [0xE2, 0x82] + Array(#""}"#.utf8), "line 1, column 11: invalid UTF-8 in a string (byte 0xe2)"),
    (Array(#"{"k": "\t"#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8), "line 1, column 10: invalid UTF-8 in a string (byte 0xc0)"),
    (Array(#"{"k": ""#.utf8) + [0xED, 0xA0, 0x80] + Array(#"\n"}"#.utf8), "line 1, column 8: invalid UTF-8 in a string (byte 0xed)"),
]

@Test(arguments: notUTF8.indices)
func invalidUTF8IsAPositionedError(_ index: Int) {
    let (bytes, message) = notUTF8[index]
    let error = #expect(throws: TopologyError.self) { try Topology.decode(bytes, source: "t.json") }
    let expected = "t.json: " + message + "; the file must be UTF-8"
    #expect(error?.description == expected)
}

@Test func deeplyNestedJSONIsRejectedWithoutExhaustingTheStack() {
    let json = String(repeating: "[", count: 100_000)
    let error = #expect(throws: TopologyError.self) { try Topology.decode(json.utf8, source: "t.json") }
    #expect(error?.description == "t.json: line 1, column 514: nested deeper than 512 levels")
}

@Test func aMissingFileNamesThePathAndTheReason() {
    let error = #expect(throws: TopologyError.self) { try Topology.load(contentsOf: "/nonexistent/machine.json") }
    #expect(error?.description == "/nonexistent/machine.json: cannot read the file: No such file or directory")
}

/// A one-device machine (00:02.0) with `slots`.
private func slotMachine(_ slots: String) -> String {
    String(D.machine(devices: [D.device("00:02.0")]).dropLast(2)) + ",\n" + #""slots": ["# + slots + "] }"
}
