import IOMMUCore
import SystemPackage
import Testing
import Topology

/// The `state` section: what `ctl dump` writes, what booting a document
/// restores, and the round trip between the two.
@Suite struct StateTests {
    let document = TopologyDocument.defaultMachine

    private func address(_ text: String) -> PCIAddress { PCIAddress(text)! }

    private func device(_ machine: Machine, _ text: String) throws -> Device {
        try #require(machine.device(at: address(text)))
    }

    /// Dumps `machine`, boots the dump and dumps that: the two texts must be
    /// equal. Returns the machine booted from the dump.
    @discardableResult
    private func roundTrip(_ machine: Machine, sourceLocation: SourceLocation = #_sourceLocation) throws -> Machine {
        let first = document.dump(machine).prettyText
        let reloaded = try TopologyDocument(first.utf8, source: "dump.json")
        let restored = try reloaded.boot()
        #expect(reloaded.dump(restored).prettyText == first, sourceLocation: sourceLocation)
        return restored
    }

    private func write(_ text: String, _ store: (UnsafeRawBufferPointer) -> Errno?) -> Errno? {
        Array(text.utf8).withUnsafeBytes(store)
    }

    @Test func aFreshMachineDumpsEveryGroupAndDeviceAndNothingElse() throws {
        let machine = try document.boot()
        let state = try #require(document.dump(machine)["state"])
        #expect(state["groups"]?.arrayValue?.count == 8)
        #expect(state["groups"]?.arrayValue?[3] == JSON.object([
            .init("id", .integer(3)), .init("devices", .array([.string("0000:00:1c.0"), .string("0000:02:00.0")])),
            .init("type", .string("DMA-FQ")),
        ]))
        #expect(state["devices"]?.arrayValue?.count == 17)
        #expect(state["devices"]?.arrayValue?.first == JSON.object([.init("address", .string("0000:00:00.0"))]))
        #expect(state["vfio_containers"] == nil && state["iommufd"] == nil && state["drivers"] == nil)
        try roundTrip(machine)
    }

    @Test func aVFWhoseIOMMUProbeFailedStaysOutOfAnyGroup() throws {
        let machine = try document.boot()
        let nic = try device(machine, "0000:03:00.0")
        #expect(machine.bind(nic, to: machine.driver(named: "igb")!) == nil)
        try machine.faults.arm(.domainAlloc, .init(errno: .noMemory, remaining: 2))
        #expect(machine.setNumberOfVFs(nic, 2) == nil)
        let vfs = nic.virtualFunctions
        try #require(vfs.count == 2)
        #expect(vfs[0].group == nil && vfs[0].iommu == nil)
        #expect(vfs[1].group?.snapshot.defaultDomainType != nil)
        let restored = try roundTrip(machine)
        let restoredVFs = try device(restored, "0000:03:00.0").virtualFunctions
        #expect(restoredVFs.map { $0.group == nil } == [true, false])
    }

    @Test func everyKindOfChangeSurvivesTheRoundTrip() throws {
        let machine = try document.boot()
        let nvme = try device(machine, "0000:02:00.0"), nic = try device(machine, "0000:03:00.0")
        // Group 3: nvme unbound, identity, then bound to vfio-pci by override.
        #expect(machine.unbind(nvme) == nil)
        #expect(write("identity") { machine.group(id: 3)!.storeType($0, caller: FullyPrivileged()).failure } == nil)
        #expect(write("vfio-pci") { machine.setDriverOverride(nvme, $0) } == nil)
        #expect(machine.probe(nvme) == nil)
        // Group 4: the NIC bound to igb with 2 VFs, autoprobe off, one reset method.
        #expect(machine.bind(nic, to: machine.driver(named: "igb")!) == nil)
        #expect(machine.setNumberOfVFs(nic, 2) == nil)
        machine.setDriversAutoprobe(nic, false)
        #expect(write("") { machine.setResetMethods(nic, $0) } == nil)
        // Dynamic ids, a removed device, a VFIO container, an iommufd context.
        #expect(write("10ec 8168") { machine.addDynamicID(machine.driver(named: "8139too")!, $0) } == nil)
        machine.remove(try device(machine, "0000:05:01.0"))
        #expect(machine.unbind(try device(machine, "0000:05:00.0")) == nil)
        #expect(machine.attachVFIOGroup(machine.group(id: 6)!, to: "c1") == nil)
        #expect(machine.attachVFIOGroup(machine.group(id: 0)!, to: "c1") == nil)
        let vf = try #require(nic.virtualFunctions.first)
        #expect(machine.unbind(vf) == nil)
        #expect(machine.bindIOMMUFD(vf, context: "ctx") == nil)

        let restored = try roundTrip(machine)
        let state = try #require(document.dump(restored)["state"])
        #expect(state["vfio_containers"] == JSON.array([.object([
            .init("name", .string("c1")), .init("domains", .array([.array([.integer(0), .integer(6)])])),
        ])]))
        #expect(state["iommufd"]?.compactText == #"[{"context":"ctx","devices":["0000:03:10.0"]}]"#)
        #expect(state["drivers"]?.compactText == #"[{"name":"8139too","new_ids":["10ec 8168"]}]"#)
        #expect(restored.group(id: 3)?.typeText == "identity\n")
        #expect(try device(restored, "0000:02:00.0").driver?.name == "vfio-pci")
        #expect(try device(restored, "0000:03:00.0").activeResetMethods == [])
        #expect(try device(restored, "0000:03:00.0").virtualFunctions.count == 2)
        #expect(restored.device(at: address("0000:05:01.0")) == nil)
        #expect(restored.group(id: 6)?.snapshot.owner != nil)
    }

    @Test func groupIDsThatHistoryMovedOffProbeOrderComeBack() throws {
        let machine = try document.boot()
        let nic = try device(machine, "0000:03:00.0")
        #expect(machine.bind(nic, to: machine.driver(named: "igb")!) == nil)
        #expect(machine.setNumberOfVFs(nic, 2) == nil)   // groups 8 and 9
        machine.remove(try device(machine, "0000:00:00.0"))   // frees 0
        #expect(machine.setNumberOfVFs(nic, 0) == nil)   // frees 8 and 9
        #expect(machine.setNumberOfVFs(nic, 2) == nil)   // the VFs now get 0 and 8
        let ids = { (m: Machine) in m.groups.map { "\($0.id): \($0.snapshot.devices.map(\.description))" } }
        let restored = try roundTrip(machine)
        #expect(ids(restored) == ids(machine))
        #expect(restored.group(id: 0)?.snapshot.devices == [address("0000:03:10.0")])
    }

    @Test func aDeferredAttachThatHappenedIsRestored() throws {
        let json = #"""
            { "iommu_units": [ { "name": "dmar0", "family": "intel" } ],
              "devices": [ { "address": "00:02.0", "vendor": 1, "device": 2, "class": "0x020000", "iommu": "dmar0",
                             "group": 0, "attach_deferred": true } ] }
            """#
        let description = try TopologyDocument(json.utf8, source: "t.json")
        let machine = try description.boot()
        let nic = try device(machine, "0000:00:02.0")
        #expect(machine.group(id: 0)!.isAttachDeferred(nic))
        #expect(description.dump(machine)["state"]?["devices"]?.compactText == #"[{"address":"0000:00:02.0"}]"#)
        #expect(machine.mapDMA(nic) == nil)
        let dump = description.dump(machine)
        #expect(dump["state"]?["devices"]?.compactText == #"[{"address":"0000:00:02.0","dma_mapped":true}]"#)
        let restored = try TopologyDocument(dump.prettyText.utf8, source: "dump.json").boot()
        #expect(!restored.group(id: 0)!.isAttachDeferred(try device(restored, "0000:00:02.0")))
    }

    @Test func prettyTextPutsOneObjectOfAnArrayPerLineAndParsesBack() throws {
        let value = JSON.object([
            .init("kernel", .object([.init("command_line", .string("a \"b\"\n\u{1}é"))])),
            .init("devices", .array([.object([.init("address", .string("x")), .init("regions", .array([.integer(1)]))])])),
            .init("empty", .array([])),
        ])
        #expect(value.prettyText == #"""
            {
              "kernel": { "command_line": "a \"b\"\n\u0001é" },
              "devices": [
                { "address": "x", "regions": [ 1 ] }
              ],
              "empty": []
            }

            """#)
        #expect(try JSON.parse(Array(value.prettyText.utf8)) == value)
        #expect(try JSON.parse(Array(value.compactText.utf8)) == value)
        #expect(!value.compactText.contains("\n"))
    }
}

/// A state that is not valid, with the exact message.
struct BadState: Sendable, CustomTestStringConvertible {
    var name: String
    /// Replaces the default machine's fresh `state` section.
    var state: String
    /// The document's `profile`, if not the dump's.
    var profile: String? = nil
    var message: String
    var testDescription: String { name }
}

/// The default machine's state right after boot.
private let bootState = TopologyDocument.defaultMachine.dump(try! TopologyDocument.defaultMachine.boot())["state"]!

/// `bootState` with `groups` and `devices` as given, and `more` members.
private func freshState(groups: String? = nil, devices: String? = nil, more: String = "") -> String {
    #"{ "groups": \#(groups ?? bootState["groups"]!.compactText), "devices": \#(devices ?? bootState["devices"]!.compactText)\#(more) }"#
}

/// `bootState`'s groups without group 2, the group of 0000:00:14.0 alone:
/// its IOMMU probe failed at hot-plug.
private let groupsWithout2 = JSON.array(bootState["groups"]!.arrayValue!.filter { $0["id"] != .integer(2) }).compactText

/// `bootState`'s groups with group 7's type left out.
private let groupsWithoutType7 = JSON.array(bootState["groups"]!.arrayValue!.dropLast() + [.object([
    .init("id", .integer(7)), .init("devices", .array(["0000:00:1f.0", "0000:00:1f.3", "0000:00:1f.4"].map { .string($0) })),
])]).compactText

let badStates: [BadState] = [
    BadState(name: "unknown key", state: freshState(more: #", "vfio": []"#),
             message: "d.json: state: unknown key \"vfio\" (expected one of: groups, devices, drivers, vfio_containers, iommufd, faults, resets, module_parameters)"),
    BadState(name: "duplicate group id",
             state: freshState(groups: #"[{ "id": 1, "devices": ["0000:00:00.0"] }, { "id": 1, "devices": ["0000:00:14.0"] }]"#),
             message: "d.json: state.groups[1].id: id 1 is already the id of state.groups[0]"),
    BadState(name: "one label split over two groups",
             state: freshState(groups: #"[{ "id": 1, "devices": ["0000:00:1c.0"] }, { "id": 2, "devices": ["0000:02:00.0"] }]"#),
             message: "d.json: state.groups[1].devices[0]: 0000:02:00.0 shares the group label \"3\" with a device of state.groups[0]: one label is one group"),
    BadState(name: "unknown driver",
             state: freshState(devices: #"[{ "address": "0000:02:00.0", "driver": "nvmf" }]"#),
             message: "d.json: state.devices[0].driver: unknown driver \"nvmf\" (the description's drivers: 8139too, i801_smbus, igb, igbvf, nouveau, nvme, pci-stub, pcieport, snd_hda_intel, vfio-pci, xhci_hcd)"),
    BadState(name: "num_vfs on a device without SR-IOV",
             state: freshState(devices: #"[{ "address": "0000:02:00.0", "num_vfs": 1 }]"#),
             message: "d.json: state.devices[0].num_vfs: 0000:02:00.0 is not an SR-IOV PF of the description"),
    BadState(name: "dma_mapped on a device that does not defer",
             state: freshState(devices: #"[{ "address": "0000:02:00.0", "dma_mapped": true }]"#),
             message: "d.json: state.devices[0].dma_mapped: 0000:02:00.0 is not attach_deferred in the description"),
    BadState(name: "a container of a group the state does not have",
             state: freshState(more: #", "vfio_containers": [{ "name": "c", "domains": [[9]] }]"#),
             message: "d.json: state.vfio_containers[0].domains[0][0]: group 9 is not in state.groups"),
    BadState(name: "a type the kernel logic refuses (untrusted device)",
             state: freshState().replacingOccurrences(of: #""type":"DMA"}"#, with: #""type":"identity"}"#),
             message: "d.json: state.groups[5].type: writing identity to the group's type fails: Invalid argument"),
    BadState(name: "a VFIO group with a normal driver bound",
             state: freshState(more: #", "vfio_containers": [{ "name": "c", "domains": [[3]] }]"#),
             message: "d.json: state.vfio_containers[0].domains[0][0]: attaching group 3 fails: Operation not permitted"),
    BadState(name: "two domains where the units share a driver",
             state: freshState(more: #", "vfio_containers": [{ "name": "c", "domains": [[0], [4]] }]"#),
             message: "d.json: state.vfio_containers[0].domains[1][0]: group 4 shares the domain of group 0 (their IOMMU units have one driver)"),
    BadState(name: "a group with a default domain but no type",
             state: freshState(groups: groupsWithoutType7),
             message: #"d.json: state.groups[7]: group 7 has a default domain of type identity: missing key "type" "#
                 + "(linux-7.1 never leaves a group of a translated device without one)"),
    BadState(name: "a group member missing from the devices",
             state: freshState(devices: #"[{ "address": "0000:00:00.0" }]"#),
             message: "d.json: state.groups[1].devices[0]: 0000:00:01.0 is not in state.devices"),
    BadState(name: "a device in no group, where the profile keeps a device whose probe failed in its group",
             state: freshState(groups: groupsWithout2), profile: "linux-6.1",
             message: "d.json: state.groups: the machine has 8 groups, the state lists 7"),
    BadState(name: "a VF that num_vfs does not create",
             state: freshState(groups: #"[{ "id": 0, "devices": ["0000:00:00.0"] }, { "id": 1, "devices": ["0000:03:10.0"] }]"#,
                               devices: #"[{ "address": "0000:00:00.0" }, { "address": "0000:03:10.0" }]"#),
             message: "d.json: state.devices[1].address: 0000:03:10.0 is not present after the restore (neither described nor a VF of a listed num_vfs)"),
]

@Test(arguments: badStates)
func rejectsABadStateWithAPreciseMessage(_ bad: BadState) throws {
    let description = TopologyDocument.defaultMachine.dump(try TopologyDocument.defaultMachine.boot())
    guard case .object(let members) = description else { Issue.record("not an object"); return }
    let state = try JSON.parse(Array(bad.state.utf8))
    let profile = bad.profile.map { JSON.string($0) } ?? description["profile"]!
    let text = JSON.object(members.filter { $0.key != "state" && $0.key != "profile" } + [.init("profile", profile), .init("state", state)]).prettyText
    let error = #expect(throws: TopologyError.self) { try TopologyDocument(text.utf8, source: "d.json").boot() }
    #expect(error?.description == bad.message)
}

private extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
