import IOMMUCore
import SystemPackage
import Testing

/// Replays of Tests/IntegrationTests/Fixtures/oracle/6.12-default.txt (Debian 6.12.95 on QEMU
/// q35, VT-d with caching mode) against `Oracle612.machine()`. Every expected
/// value below was transcribed from the transcript.
@Suite("oracle: Linux 6.12 on q35 with caching-mode VT-d")
struct OracleTests {
    // MARK: Boot

    static let groups: [(id: Int, devices: [String])] = [
        (0, ["0000:00:00.0"]), (1, ["0000:00:01.0"]), (2, ["0000:00:02.0"]), (3, ["0000:00:03.0"]),
        (4, ["0000:00:04.0"]), (5, ["0000:00:05.0"]), (6, ["0000:00:06.0", "0000:07:00.0"]), (7, ["0000:00:07.0"]),
        (8, ["0000:00:08.0"]), (9, ["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"]), (10, ["0000:01:00.0"]),
        (11, ["0000:02:00.0"]), (12, ["0000:03:00.0"]), (13, ["0000:04:00.0", "0000:05:01.0", "0000:05:02.0"]),
        (14, ["0000:06:00.0", "0000:06:00.1"]), (15, ["0000:08:00.0"]),
    ]

    @Test("boot-dmesg: the IOMMU core's lines, then one `Adding to iommu group` per device in probe order")
    func bootLog() throws {
        let machine = try Oracle612.machine()
        let adding = ["00:00.0 0", "00:01.0 1", "00:02.0 2", "00:03.0 3", "00:04.0 4", "00:05.0 5", "00:06.0 6",
                      "00:07.0 7", "00:08.0 8", "00:1f.0 9", "00:1f.2 9", "00:1f.3 9", "01:00.0 10", "02:00.0 11",
                      "03:00.0 12", "04:00.0 13", "05:01.0 13", "05:02.0 13", "06:00.0 14", "06:00.1 14",
                      "07:00.0 6", "08:00.0 15"].map { entry in
            let parts = entry.split(separator: " ")
            return "pci 0000:\(parts[0]): Adding to iommu group \(parts[1])"
        }
        #expect(machine.log.texts == [
            "iommu: Default domain type: Translated",
            "iommu: DMA domain TLB invalidation policy: lazy mode",
            "DMAR: IOMMU batching disallowed due to virtualization",
        ] + adding)
    }

    @Test("inventory: sixteen groups, all DMA, with their members in join order")
    func inventory() throws {
        let machine = try Oracle612.machine()
        let actual = machine.groups.map { ($0.id, $0.snapshot.devices.map(\.description), $0.typeText) }
        #expect(actual.map(\.0) == Self.groups.map(\.id))
        #expect(actual.map(\.1) == Self.groups.map(\.devices))
        #expect(actual.allSatisfy { $0.2 == "DMA\n" })
        // Boot drivers took their references: pcieport manages DMA itself, ahci does not.
        #expect(try machine.group(of: "0000:00:01.0").snapshot.ownerCount == 0)
        #expect(try machine.group(of: "0000:00:1f.2").snapshot.ownerCount == 1)
        #expect(try machine.group(of: "0000:05:01.0").snapshot.ownerCount == 2)
    }

    // MARK: section groups

    /// The writes the transcript tries in every state (the empty and 5000-byte
    /// writes belong to the filesystem layer and are left out).
    static let sequence = ["DMA", "DMA-FQ", "identity", "auto", "DMA\n", "DMA-FQ\n", "identity\n", "auto\n",
                           " DMA", "dma", "DMA-FQ \n", "blocked", "unmanaged"]

    enum State: String, Sendable {
        /// No kernel driver holds the group (unbound, no driver, or only pcieport).
        case free
        /// A kernel driver is bound and the type is still the boot DMA.
        case bound
        /// A kernel driver is still bound after the bound sequence left DMA-FQ.
        case partial

        var outcomes: [WriteOutcome] {
            let rejected = { (type: String) in Array(repeating: WriteOutcome.err(.invalidArgument, type), count: 5) }
            switch self {
            case .free:
                return [.ok(3, "DMA"), .ok(6, "DMA-FQ"), .ok(8, "identity"), .ok(4, "DMA"),
                        .ok(4, "DMA"), .ok(7, "DMA-FQ"), .ok(9, "identity"), .ok(5, "DMA")] + rejected("DMA")
            case .bound:
                return [.err(.notPermitted, "DMA"), .ok(6, "DMA-FQ")]
                    + Array(repeating: .err(.notPermitted, "DMA-FQ"), count: 6) + rejected("DMA-FQ")
            case .partial:
                return Array(repeating: .err(.notPermitted, "DMA-FQ"), count: 8) + rejected("DMA-FQ")
            }
        }
    }

    struct GroupScript: Sendable, CustomTestStringConvertible {
        var group: Int
        var first: State
        /// Each later phase starts by unbinding one device.
        var then: [(unbind: String, state: State)] = []
        var testDescription: String { "group \(group)" }
    }

    static let scripts: [GroupScript] = [.init(group: 0, first: .free)]
        // Root ports on pcieport, which manages DMA itself.
        + [1, 2, 3, 4, 5, 7].map { GroupScript(group: $0, first: .free, then: [("0000:00:0\($0).0", .free)]) }
        + [
        .init(group: 6, first: .bound, then: [("0000:00:06.0", .partial), ("0000:07:00.0", .free)]),
        .init(group: 8, first: .bound, then: [("0000:00:08.0", .free)]),
        .init(group: 9, first: .bound, then: [("0000:00:1f.2", .free)]),
        .init(group: 10, first: .bound, then: [("0000:01:00.0", .free)]),
        .init(group: 11, first: .bound, then: [("0000:02:00.0", .free)]),
        .init(group: 12, first: .bound, then: [("0000:03:00.0", .free)]),
        .init(group: 13, first: .bound, then: [("0000:05:01.0", .partial), ("0000:05:02.0", .free)]),
        .init(group: 14, first: .bound, then: [("0000:06:00.0", .partial), ("0000:06:00.1", .free)]),
        .init(group: 15, first: .free),
    ]

    @Test("section groups: the write sequence in every driver state, then the drivers rebound", arguments: scripts)
    func groupsSection(_ script: GroupScript) throws {
        let machine = try Oracle612.machine()
        let group = try #require(machine.group(id: script.group))
        let phases: [(unbind: String?, state: State)] = [(nil, script.first)] + script.then.map { ($0.unbind, $0.state) }
        for phase in phases {
            if let address = phase.unbind { #expect(try machine.unbind(address) == nil) }
            for (data, expected) in zip(Self.sequence, phase.state.outcomes) {
                expectWrite(data, to: group, of: machine, expected)
            }
        }
        for (address, driver) in script.then.map({ ($0.unbind, Oracle612.bootDriver(of: $0.unbind)) }) {
            #expect(try machine.bind(address, to: driver) == nil)
        }
        #expect(group.typeText == "DMA\n")
    }

    // MARK: section transitions

    struct Transition: Sendable, CustomTestStringConvertible {
        var bound: Bool
        var from: String
        var to: String
        var outcome: WriteOutcome
        var testDescription: String { "\(bound ? "bound" : "unbound") \(from) → \(to): \(outcome)" }
    }

    static let transitions: [Transition] = {
        let unbound: [(String, String, WriteOutcome)] = [
            ("DMA", "DMA", .ok(3, "DMA")), ("DMA", "DMA-FQ", .ok(6, "DMA-FQ")),
            ("DMA", "identity", .ok(8, "identity")), ("DMA", "auto", .ok(4, "DMA")),
            ("DMA-FQ", "DMA", .ok(3, "DMA")), ("DMA-FQ", "DMA-FQ", .ok(6, "DMA-FQ")),
            ("DMA-FQ", "identity", .ok(8, "identity")), ("DMA-FQ", "auto", .ok(4, "DMA")),
            ("identity", "DMA", .ok(3, "DMA")), ("identity", "DMA-FQ", .ok(6, "DMA-FQ")),
            ("identity", "identity", .ok(8, "identity")), ("identity", "auto", .ok(4, "DMA")),
        ]
        let bound: [(String, String, WriteOutcome)] = [
            ("DMA", "DMA", .err(.notPermitted, "DMA")), ("DMA", "DMA-FQ", .ok(6, "DMA-FQ")),
            ("DMA", "identity", .err(.notPermitted, "DMA")), ("DMA", "auto", .err(.notPermitted, "DMA")),
        ] + ["DMA-FQ", "identity"].flatMap { from in
            ["DMA", "DMA-FQ", "identity", "auto"].map { (from, $0, WriteOutcome.err(.notPermitted, from)) }
        }
        return unbound.map { Transition(bound: false, from: $0.0, to: $0.1, outcome: $0.2) }
            + bound.map { Transition(bound: true, from: $0.0, to: $0.1, outcome: $0.2) }
    }()

    @Test("section transitions: from × to on the e1000e singleton (group 10), unbound and bound", arguments: transitions)
    func transitionsSection(_ t: Transition) throws {
        let machine = try Oracle612.machine()
        let group = try machine.group(of: Oracle612.nic)
        try #require(group.id == 10)
        try machine.unbind(Oracle612.nic)
        try #require(group.write(t.from) == .success(t.from.utf8.count))
        if t.bound { try #require(try machine.bind(Oracle612.nic, to: "e1000e") == nil) }
        expectWrite(t.to, to: group, of: machine, t.outcome)
        #expect(group.snapshot.isOnDefaultDomain)
        #expect(group.snapshot.attachedDomainType == group.snapshot.defaultDomainType)
    }

    // MARK: section vfio

    struct VFIOCase: Sendable, CustomTestStringConvertible {
        var name: String
        var group: Int
        /// Devices moved from their boot driver to vfio-pci.
        var vfio: [String]
        var testDescription: String { name }
    }

    static let vfioCases: [VFIOCase] = [
        .init(name: "singleton", group: 10, vfio: ["0000:01:00.0"]),
        .init(name: "bridge group, both endpoints on vfio-pci", group: 13, vfio: ["0000:05:01.0", "0000:05:02.0"]),
        .init(name: "no-ACS port group, endpoint on vfio-pci, port on pcieport", group: 6, vfio: ["0000:07:00.0"]),
    ]

    static let probes = ["DMA", "DMA-FQ", "identity", "auto", "blocked", "unmanaged"]

    @Test("section vfio: vfio-pci bound lets every change through; a held container allows only DMA→DMA-FQ",
          arguments: vfioCases)
    func vfioSection(_ c: VFIOCase) throws {
        let machine = try Oracle612.machine()
        let group = try #require(machine.group(id: c.group))
        for address in c.vfio {
            try machine.unbind(address)
            #expect(try machine.bind(address, to: "vfio-pci") == nil)
        }
        let vfioBound: [WriteOutcome] = [.ok(3, "DMA"), .ok(6, "DMA-FQ"), .ok(8, "identity"), .ok(4, "DMA"),
                                         .err(.invalidArgument, "DMA"), .err(.invalidArgument, "DMA")]
        for (data, expected) in zip(Self.probes, vfioBound) { expectWrite(data, to: group, of: machine, expected) }

        let container = DMAOwner("vfio-container")
        #expect(group.claimDMAOwner(container) == nil)
        #expect(group.typeText == "DMA\n")
        let held: [WriteOutcome] = [.err(.notPermitted, "DMA"), .ok(6, "DMA-FQ"), .err(.notPermitted, "DMA-FQ"),
                                    .err(.notPermitted, "DMA-FQ"), .err(.invalidArgument, "DMA-FQ"),
                                    .err(.invalidArgument, "DMA-FQ")]
        for (data, expected) in zip(Self.probes, held) { expectWrite(data, to: group, of: machine, expected) }

        group.releaseDMAOwner()
        #expect(group.typeText == "DMA-FQ\n")
        #expect(group.snapshot.isOnDefaultDomain)
        for address in c.vfio {
            try machine.unbind(address)
            #expect(try machine.bind(address, to: Oracle612.bootDriver(of: address)) == nil)
        }
        #expect(group.typeText == "DMA-FQ\n")
    }

    @Test("section vfio: one bridge endpoint on vfio-pci, the other on e1000: EPERM except DMA→DMA-FQ; the container is refused")
    func vfioPartialBridgeGroup() throws {
        let machine = try Oracle612.machine()
        let group = try #require(machine.group(id: 13))
        try machine.unbind("0000:05:01.0")
        #expect(try machine.bind("0000:05:01.0", to: "vfio-pci") == nil)
        let partial: [WriteOutcome] = [.err(.notPermitted, "DMA"), .ok(6, "DMA-FQ"), .err(.notPermitted, "DMA-FQ"),
                                       .err(.notPermitted, "DMA-FQ"), .err(.invalidArgument, "DMA-FQ"),
                                       .err(.invalidArgument, "DMA-FQ")]
        for (data, expected) in zip(Self.probes, partial) { expectWrite(data, to: group, of: machine, expected) }
        #expect(group.claimDMAOwner(DMAOwner("vfio-container")) == .notPermitted)
        #expect(group.snapshot.owner == nil)
        #expect(group.snapshot.ownerCount == 1)
    }
}

extension Oracle612 {
    static func bootDriver(of address: String) -> String {
        devices.first { $0.address.description == address }!.driver!
    }
}
