import IOMMUCore
import SystemPackage
import Testing

/// §3 (reading `type`) and §4 (writing it): the numbered cases of §14 that
/// concern the store itself. The machine is §14's unless a case says otherwise.
@Suite("type read and store (§3, §4)")
struct TypeStoreTests {
    // MARK: Reading

    @Test("§14.1 type reads DMA-FQ\\n (7 bytes) on the stock lazy x86 machine")
    func case1() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA-FQ\n")
        #expect(group.typeText.utf8.count == 7)
    }

    @Test("§14.2 a passthrough boot reads identity\\n, a strict boot DMA\\n",
          arguments: [("iommu=pt", "identity\n"), ("iommu.strict=1", "DMA\n")])
    func case2(commandLine: String, expected: String) throws {
        let group = try Section14.group5(Section14.machine(commandLine: commandLine))
        #expect(group.typeText == expected)
    }

    @Test("§14.3 a VFIO no-IOMMU group: type unknown, name vfio-noiommu, DMA → EINVAL, no reserved regions")
    func case3() throws {
        // vfio-pci's probe makes the group (enable_unsafe_noiommu_mode on).
        let machine = try Machine.boot([TestDevice("0000:00:03.0", group: "noiommu", driver: "vfio-pci", unit: nil)],
                                       commandLine: "vfio.enable_unsafe_noiommu_mode=1", units: [])
        let group = try machine.group(of: "0000:00:03.0")
        #expect(group.name == "vfio-noiommu")
        #expect(group.snapshot.defaultDomainType == nil)
        expectWrite("DMA", to: group, of: machine, .err(.invalidArgument, "unknown"))
        // The region walk stops at the first device without IOMMU ops.
        #expect(group.reservedRegionsText == "")
    }

    // MARK: Who may write

    @Test("§14.14/15 a writer lacking CAP_SYS_ADMIN or CAP_SYS_RAWIO gets EACCES before parsing; state unchanged",
          arguments: [CapabilitySet([.sysAdmin]), CapabilitySet([.sysRawio]), CapabilitySet([.dacOverride]), CapabilitySet([])])
    func case14(caller: CapabilitySet) throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        for data in ["identity", "bogus"] {
            expectWrite(data, to: group, of: machine, .err(.permissionDenied, "DMA-FQ"), as: caller)
        }
        #expect(group.snapshot.attachedDomainType == .dmaFQ)
    }

    @Test("§14.14 CAP_SYS_ADMIN + CAP_SYS_RAWIO suffice: CAP_DAC_OVERRIDE is not needed (oracle privileges)")
    func case14Control() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"), as: CapabilitySet([.sysAdmin, .sysRawio]))
    }

    @Test("§14.14 EACCES comes before the no-default-domain EINVAL")
    func case14BeforeDefaultDomainCheck() throws {
        let machine = try Machine.boot([TestDevice("0000:00:03.0", group: "noiommu", driver: "vfio-pci", unit: nil)],
                                       commandLine: "vfio.enable_unsafe_noiommu_mode=1", units: [])
        expectWrite("DMA", to: try machine.group(of: "0000:00:03.0"), of: machine,
                    .err(.permissionDenied, "unknown"), as: CapabilitySet([]))
    }

    // MARK: Parsing (sysfs_streq)

    /// §14.16 and the oracle's `extras`: exact, case-sensitive tokens with at
    /// most one trailing newline.
    static let nearMisses = [" DMA", "dma", "DMA-FQ \n", "DMA\n\n", "\nDMA", "DMA\r\n", "DMA\t", "Identity", "AUTO",
                             "DMA-fq", "DMA_FQ", "passthrough", "pt", "lazy", "strict", "translated", "0", "blocked",
                             "unmanaged"]

    @Test("§14.16 near-miss tokens → EINVAL, also while a driver is bound (parsing precedes the EPERM check)",
          arguments: nearMisses, [false, true])
    func case16(data: String, bound: Bool) throws {
        let machine = try Oracle612.machine()
        let group = try machine.group(of: Oracle612.nic)
        if !bound { try machine.unbind(Oracle612.nic) }
        expectWrite(data, to: group, of: machine, .err(.invalidArgument, "DMA"))
        #expect(group.snapshot.ownerCount == (bound ? 1 : 0))
    }

    @Test("§14.17 unbound, type identity, write DMA\\n → 4, type DMA")
    func case17() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        try #require(group.write("identity") == .success(8))
        expectWrite("DMA\n", to: group, of: machine, .ok(4, "DMA"))
        #expect(group.snapshot.attachedDomainType == .dma)
    }

    @Test("§14.18 unbound, write identity without newline → 8, type identity")
    func case18() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        #expect(group.snapshot.attachedDomainType == .identity)
        #expect(group.snapshot.isOnDefaultDomain)
    }

    @Test("§14.19 unbound, write DMA\\0junk (8 bytes) → 8, type DMA: matching stops at the NUL")
    func case19() throws {
        let machine = try Section14.machine()
        expectWrite("DMA\0junk", to: try Section14.group5(machine), of: machine, .ok(8, "DMA"))
    }

    @Test("§14.21 store side of a clamped write: 4096 bytes without a NUL → EINVAL; NUL filler → 4096")
    func case21() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        let head = Array("DMA\n".utf8)
        let tail = 4096 - head.count
        expectWrite(bytes: head + Array(repeating: UInt8(ascii: "x"), count: tail), to: group, of: machine,
                    .err(.invalidArgument, "DMA-FQ"))
        expectWrite(bytes: head + Array(repeating: 0, count: tail), to: group, of: machine, .ok(4096, "DMA"))
    }

    @Test("oracle extras: NUL-terminated and NUL-padded page-sized buffers, unbound then bound")
    func oracleNULExtras() throws {
        let machine = try Oracle612.machine()
        let group = try machine.group(of: Oracle612.nic)
        func page(_ text: String) -> [UInt8] { Array(text.utf8) + Array(repeating: 0, count: 4096 - text.utf8.count) }

        try machine.unbind(Oracle612.nic)
        expectWrite("DMA\0junk", to: group, of: machine, .ok(8, "DMA"))
        expectWrite(bytes: page("identity"), to: group, of: machine, .ok(4096, "identity"))
        expectWrite(bytes: page("identity\n"), to: group, of: machine, .ok(4096, "identity"))
        expectWrite(bytes: page("DMA-FQ"), to: group, of: machine, .ok(4096, "DMA-FQ"))
        expectWrite("auto", to: group, of: machine, .ok(4, "DMA"))

        try #require(try machine.bind(Oracle612.nic, to: "e1000e") == nil)
        expectWrite("DMA\0junk", to: group, of: machine, .err(.notPermitted, "DMA"))
        expectWrite(bytes: page("identity"), to: group, of: machine, .err(.notPermitted, "DMA"))
        expectWrite(bytes: page("DMA-FQ"), to: group, of: machine, .ok(4096, "DMA-FQ"))
        expectWrite("auto", to: group, of: machine, .err(.notPermitted, "DMA-FQ"))
    }

    // MARK: A kernel driver bound (owner_cnt 1)

    @Test("§14.23 live DMA→DMA-FQ while a driver is bound: count, type DMA-FQ, the driver stays bound")
    func case23() throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: "e1000e"), commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA\n")
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
        #expect(try machine.device(Section14.target).driver == .e1000e)
        let snapshot = group.snapshot
        #expect(snapshot.ownerCount == 1)
        #expect(snapshot.isOnDefaultDomain)
        #expect(snapshot.attachedDomainType == .dmaFQ)
    }

    @Test("§14.24 as 23 but the flush queue cannot be set up → ENOMEM, type DMA, `iova flush queue initialization failed`")
    func case24() throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: "e1000e"), commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        try machine.faults.arm(.flushQueueInit, .init(errno: .noMemory))
        expectWrite("DMA-FQ", to: group, of: machine, .err(.noMemory, "DMA"),
                    logs: ["iova flush queue initialization failed"])
        #expect(group.snapshot.attachedDomainType == .dma)
        #expect(group.snapshot.ownerCount == 1)
    }

    @Test("§14.25–27 a bound driver refuses every non-live change with EPERM and logs nothing",
          arguments: [("", "DMA-FQ", "DMA-FQ"),            // 25: current is not DMA, so no live path
                      ("iommu.strict=1", "DMA", "DMA"),    // 26: even the type it already has
                      ("", "identity", "DMA-FQ"),          // 27
                      ("", "auto", "DMA-FQ")])
    func case25to27(commandLine: String, data: String, type: String) throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: "e1000e"), commandLine: commandLine)
        let group = try Section14.group5(machine)
        expectWrite(data, to: group, of: machine, .err(.notPermitted, type))
        #expect(group.snapshot.ownerCount == 1)
        #expect(group.snapshot.isOnDefaultDomain)
    }

    @Test("binding a driver keeps the chosen default domain (oracle rebind section)")
    func rebindKeepsType() throws {
        let machine = try Oracle612.machine()
        let group = try machine.group(of: Oracle612.nic)
        for (data, type) in [("identity", DomainType.identity), ("DMA", .dma), ("DMA-FQ", .dmaFQ)] {
            try machine.unbind(Oracle612.nic)
            #expect(group.write(data).isSuccess)
            #expect(try machine.bind(Oracle612.nic, to: "e1000e") == nil)
            #expect(group.snapshot.defaultDomainType == type)
            #expect(group.snapshot.attachedDomainType == type)
            #expect(group.snapshot.ownerCount == 1)
        }
    }

    // MARK: Groups and device wishes

    @Test("§14.32 two-device group, both unbound: identity → 8, both devices on the new domain")
    func case32() throws {
        let machine = try Section14.machine(siblings: [Section14.sibling(1)])
        let group = try Section14.group5(machine)
        #expect(group.snapshot.devices.map(\.description) == ["0000:03:00.0", "0000:03:00.1"])
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        let snapshot = group.snapshot
        #expect(snapshot.attachedPerDevice == [.identity, .identity])
        #expect(snapshot.deviceDomainsMatchGroup)
        #expect(snapshot.isOnDefaultDomain)
    }

    @Test("§14.33 untrusted device: boots DMA even on a lazy machine; identity → EINVAL silently; auto → DMA")
    func case33() throws {
        let machine = try Section14.machine(Section14.targetDevice(untrusted: true))
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA\n")
        expectWrite("identity", to: group, of: machine, .err(.invalidArgument, "DMA"))
        try #require(group.write("DMA-FQ") == .success(6))   // live path
        expectWrite("auto", to: group, of: machine, .ok(4, "DMA"))
    }

    @Test("§14.34 the driver wishes identity: boots identity; DMA → EINVAL; auto → identity")
    func case34() throws {
        let machine = try Section14.machine(Section14.targetDevice(wish: .identity))
        let group = try Section14.group5(machine)
        #expect(group.typeText == "identity\n")
        expectWrite("DMA", to: group, of: machine, .err(.invalidArgument, "identity"))
        expectWrite("DMA-FQ", to: group, of: machine, .err(.invalidArgument, "identity"))
        expectWrite("auto", to: group, of: machine, .ok(4, "identity"))
    }

    @Test("§14.35 untrusted, strict boot: DMA-FQ via the live path while bound; unbound DMA-FQ again → EINVAL; auto → DMA")
    func case35() throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: "e1000e", untrusted: true),
                                            commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA\n")
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
        try machine.unbind(Section14.target)
        expectWrite("DMA-FQ", to: group, of: machine, .err(.invalidArgument, "DMA-FQ"))
        expectWrite("auto", to: group, of: machine, .ok(4, "DMA"))
    }

    @Test("§14.36 unbound, type identity, auto → the global DMA-FQ, or DMA when the unit cannot defer flushes",
          arguments: [(IOMMUDriverAbilities.intel, "DMA-FQ"),
                      (IOMMUDriverAbilities(family: .intel, deferredFlush: false), "DMA")])
    func case36(abilities: IOMMUDriverAbilities, type: String) throws {
        let machine = try Section14.machine(abilities: abilities)
        let group = try Section14.group5(machine)
        try #require(group.write("identity") == .success(8))
        expectWrite("auto", to: group, of: machine, .ok(4, type))
    }

    @Test("§14.37 rewriting the current type reuses the domain: with allocation and attach armed to fail it still succeeds")
    func case37() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        try #require(group.write("identity") == .success(8))
        try machine.faults.arm(.domainAlloc, .init(errno: .ioError))
        try machine.faults.arm(.attach, .init(errno: .resourceBusy))
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        // Both shots are still armed: the next real change meets the first.
        expectWrite("DMA", to: group, of: machine, .err(.ioError, "identity"))
        expectWrite("DMA", to: group, of: machine, .err(.resourceBusy, "identity"))
    }

    @Test("§14.38 a unit that cannot allocate identity: identity → the allocator's errno (v6.7+), type unchanged, no log",
          arguments: [Errno.operationNotSupported, .noMemory])
    func case38(errno: Errno) throws {
        let abilities = IOMMUDriverAbilities(family: .intel, domainTypes: [.blocked, .dma, .unmanaged],
                                             unsupportedTypeErrno: errno)
        let machine = try Section14.machine(abilities: abilities)
        let group = try Section14.group5(machine)
        expectWrite("identity", to: group, of: machine, .err(errno, "DMA-FQ"))
        #expect(group.snapshot.attachedDomainType == .dmaFQ)
        #expect(group.snapshot.isOnDefaultDomain)
    }

    @Test("§14.39 the new domain's attach fails: the errno is returned, both members stay on the old domain")
    func case39() throws {
        let machine = try Section14.machine(siblings: [Section14.sibling(1)])
        let group = try Section14.group5(machine)
        try machine.faults.arm(.attach, .init(errno: .ioError))
        expectWrite("identity", to: group, of: machine, .err(.ioError, "DMA-FQ"))
        let snapshot = group.snapshot
        #expect(snapshot.defaultDomainType == .dmaFQ)
        #expect(snapshot.attachedPerDevice == [.dmaFQ, .dmaFQ])
        #expect(snapshot.isOnDefaultDomain)
        #expect(snapshot.deviceDomainsMatchGroup)
        // The fault is spent; the change now goes through.
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
}
