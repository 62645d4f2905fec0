import IOMMUCore
import SystemPackage
import Testing

/// §5 DMA ownership: kernel drivers share the default domain through
/// `owner_cnt`; VFIO and iommufd own the whole group on the blocking domain.
@Suite("DMA ownership (§5)")
struct OwnershipTests {
    static let container = DMAOwner("vfio-container")
    static func firmwareLine(_ address: String = Section14.target) -> String {
        "vfio-pci \(address): Firmware has requested this device have a 1:1 IOMMU mapping, "
            + "rejecting configuring the device without a 1:1 mapping. Contact your platform vendor."
    }

    /// §14's machine with the target on vfio-pci, a strict boot (type DMA).
    static func vfioMachine(regions: [ReservedRegion] = [.msiWindow], siblings: [TestDevice] = [],
                            abilities: IOMMUDriverAbilities = .intel) throws -> Machine {
        try Section14.machine(Section14.targetDevice(driver: "vfio-pci", regions: regions), siblings: siblings,
                              commandLine: "iommu.strict=1", abilities: abilities)
    }

    /// The snapshot fields that say who owns the group and where it is attached.
    static func expectOwned(_ group: IOMMUGroup, by owner: DMAOwner?, count: Int, attached: DomainType?,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        let s = group.snapshot
        #expect(s.owner == owner, sourceLocation: sourceLocation)
        #expect(s.ownerCount == count, sourceLocation: sourceLocation)
        #expect(s.attachedDomainType == attached, sourceLocation: sourceLocation)
        #expect(s.isOnDefaultDomain == (owner == nil), sourceLocation: sourceLocation)
        #expect(s.deviceDomainsMatchGroup, sourceLocation: sourceLocation)
    }

    // MARK: Kernel drivers

    @Test("kernel drivers share the default domain: one owner_cnt reference per bound normal driver")
    func kernelDriversCount() throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: "e1000e"),
                                            siblings: [Section14.sibling(1, driver: "e1000e")])
        let group = try Section14.group5(machine)
        Self.expectOwned(group, by: nil, count: 2, attached: .dmaFQ)
        #expect(try machine.unbind(Section14.target) == nil)
        Self.expectOwned(group, by: nil, count: 1, attached: .dmaFQ)
        #expect(group.write("identity") == .failure(.notPermitted))
        #expect(try machine.unbind("0000:03:00.1") == nil)
        #expect(group.write("identity") == .success(8))
    }

    @Test("driver_managed_dma drivers (vfio-pci, pci-stub, pcieport) take no reference",
          arguments: ["vfio-pci", "pci-stub", "pcieport"])
    func driverManagedDMA(driver: String) throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: driver))
        Self.expectOwned(try Section14.group5(machine), by: nil, count: 0, attached: .dmaFQ)
    }

    // MARK: §14 cases in ownership states

    @Test("§14.4 a group owned by VFIO still shows its default-domain type")
    func case4() throws {
        let machine = try Self.vfioMachine()
        let group = try Section14.group5(machine)
        #expect(group.claimDMAOwner(Self.container) == nil)
        #expect(group.typeText == "DMA\n")
        #expect(group.snapshot.defaultDomainType == .dma)
        Self.expectOwned(group, by: Self.container, count: 1, attached: .blocked)
    }

    @Test("§14.28/29 drivers that manage DMA themselves do not block a change: identity succeeds",
          arguments: ["vfio-pci", "pci-stub"])
    func case28and29(driver: String) throws {
        let machine = try Section14.machine(Section14.targetDevice(driver: driver))
        let group = try Section14.group5(machine)
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        Self.expectOwned(group, by: nil, count: 0, attached: .identity)
        #expect(try machine.device(Section14.target).driver?.name == driver)
    }

    @Test("§14.29 group = {pcieport-bound port, unbound endpoint}: identity succeeds for both")
    func case29PortGroup() throws {
        let machine = try Section14.machine(rootPortGroup: "5")
        let group = try machine.group(of: Section14.target)
        #expect(group.snapshot.devices.map(\.description) == [Section14.rootPort, Section14.target])
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        #expect(group.snapshot.attachedPerDevice == [.identity, .identity])
    }

    @Test("§14.30 a VFIO container attached (owner set, owner_cnt 1): identity → EPERM, nothing moves")
    func case30() throws {
        let machine = try Self.vfioMachine()
        let group = try Section14.group5(machine)
        try #require(group.claimDMAOwner(Self.container) == nil)
        for data in ["identity", "DMA", "auto"] {
            expectWrite(data, to: group, of: machine, .err(.notPermitted, "DMA"))
        }
        Self.expectOwned(group, by: Self.container, count: 1, attached: .blocked)
    }

    @Test("§14.31 VFIO owns the group, default DMA: DMA-FQ succeeds through the live path, ownership untouched")
    func case31() throws {
        let machine = try Self.vfioMachine()
        let group = try Section14.group5(machine)
        try #require(group.claimDMAOwner(Self.container) == nil)
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
        Self.expectOwned(group, by: Self.container, count: 1, attached: .blocked)
        group.releaseDMAOwner()
        // The released group goes back to its (retagged) default domain.
        Self.expectOwned(group, by: nil, count: 0, attached: .dmaFQ)
    }

    // MARK: Claims and releases

    @Test("§14.42 a VFIO-owned group makes a normal driver's probe fail with EBUSY; vfio-pci still binds")
    func case42() throws {
        let machine = try Self.vfioMachine(siblings: [Section14.sibling(1)])
        let group = try Section14.group5(machine)
        try #require(group.claimDMAOwner(Self.container) == nil)
        #expect(try machine.bind("0000:03:00.1", to: "e1000e") == .resourceBusy)
        #expect(try machine.device("0000:03:00.1").driver == nil)
        Self.expectOwned(group, by: Self.container, count: 1, attached: .blocked)
        #expect(try machine.bind("0000:03:00.1", to: "vfio-pci") == nil)
        Self.expectOwned(group, by: Self.container, count: 1, attached: .blocked)
    }

    @Test("§14.43 a sibling bound to a normal driver: the group claim and an iommufd bind both get EPERM")
    func case43() throws {
        let machine = try Self.vfioMachine(siblings: [Section14.sibling(1, driver: "e1000e")])
        let group = try Section14.group5(machine)
        let (results, lines) = try machine.logging {
            [group.claimDMAOwner(Self.container),
             group.claimDMAOwner(DMAOwner("ictx"), for: try machine.device(Section14.target))]
        }
        #expect(results == [.notPermitted, .notPermitted])
        #expect(lines.isEmpty)
        Self.expectOwned(group, by: nil, count: 1, attached: .dma)
    }

    @Test("§14.44 a device with a `direct` region refuses the blocking domain: EINVAL and the firmware line")
    func case44() throws {
        let direct = ReservedRegion.span(0x7c00_0000, 0x7c7f_ffff, .direct)
        let machine = try Self.vfioMachine(regions: [direct, .msiWindow])
        let group = try Section14.group5(machine)
        #expect(try machine.device(Section14.target).requiresDirectMapping)
        for claim in [{ group.claimDMAOwner(Self.container) },
                      { group.claimDMAOwner(DMAOwner("ictx"), for: try machine.device(Section14.target)) }] {
            let (result, lines) = try machine.logging(claim)
            #expect(result == .invalidArgument)
            #expect(lines == [Self.firmwareLine()])
            Self.expectOwned(group, by: nil, count: 0, attached: .dma)
        }
    }

    @Test("a `direct-relaxable` region does not require 1:1 mappings: the claim succeeds")
    func directRelaxableAllowsClaim() throws {
        let machine = try Self.vfioMachine(regions: [.span(0, 0xff_ffff, .directRelaxable), .msiWindow])
        let group = try Section14.group5(machine)
        #expect(group.claimDMAOwner(Self.container) == nil)
        Self.expectOwned(group, by: Self.container, count: 1, attached: .blocked)
    }

    @Test("§14.39 rollback: the second member refuses the blocking domain, the first is moved back")
    func case39SecondMemberRollback() throws {
        let direct = ReservedRegion.span(0x7c00_0000, 0x7c7f_ffff, .direct)
        let machine = try Self.vfioMachine(siblings: [Section14.sibling(1, driver: "vfio-pci", regions: [direct])])
        let group = try Section14.group5(machine)
        let (result, lines) = machine.logging { group.claimDMAOwner(Self.container) }
        #expect(result == .invalidArgument)
        #expect(lines == [Self.firmwareLine("0000:03:00.1")])
        Self.expectOwned(group, by: nil, count: 0, attached: .dma)
        #expect(group.snapshot.attachedPerDevice == [.dma, .dma])
    }

    @Test("§14.45 iommufd: one ictx shares the group (owner_cnt 2), another gets EPERM; the last release restores the default domain")
    func case45() throws {
        let machine = try Self.vfioMachine(siblings: [Section14.sibling(1, driver: "vfio-pci")])
        let group = try Section14.group5(machine)
        let first = try machine.device(Section14.target), second = try machine.device("0000:03:00.1")
        let ictx = DMAOwner("ictx")

        #expect(group.claimDMAOwner(ictx, for: first) == nil)
        #expect(group.claimDMAOwner(ictx, for: second) == nil)
        Self.expectOwned(group, by: ictx, count: 2, attached: .blocked)
        #expect(group.claimDMAOwner(DMAOwner("other-ictx"), for: first) == .notPermitted)
        #expect(group.claimDMAOwner(Self.container) == .notPermitted)

        group.releaseDMAOwner(for: first)
        Self.expectOwned(group, by: ictx, count: 1, attached: .blocked)
        group.releaseDMAOwner(for: second)
        Self.expectOwned(group, by: nil, count: 0, attached: .dma)
    }

    @Test("iommufd claim for a device outside the group → ENODEV")
    func deviceClaimOutsideGroup() throws {
        let machine = try Self.vfioMachine()
        let group = try Section14.group5(machine)
        #expect(group.claimDMAOwner(DMAOwner("ictx"), for: try machine.device(Section14.rootPort)) == .noDevice)
        Self.expectOwned(group, by: nil, count: 0, attached: .dma)
    }

    @Test("release restores the default domain: a normal driver binds again and the type can change again")
    func releaseRestoresDefault() throws {
        let machine = try Self.vfioMachine(siblings: [Section14.sibling(1)])
        let group = try Section14.group5(machine)
        try #require(group.claimDMAOwner(Self.container) == nil)
        #expect(group.claimDMAOwner(DMAOwner("second-container")) == .notPermitted)
        group.releaseDMAOwner()
        Self.expectOwned(group, by: nil, count: 0, attached: .dma)
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        #expect(try machine.bind("0000:03:00.1", to: "e1000e") == nil)
        Self.expectOwned(group, by: nil, count: 1, attached: .identity)
    }

    @Test("the blocking domain cannot be allocated: the claim returns that errno and nothing changes")
    func blockingDomainAllocationFails() throws {
        let machine = try Self.vfioMachine()
        let group = try Section14.group5(machine)
        try machine.faults.arm(.blockingDomainAlloc, .init(errno: .noMemory))
        #expect(group.claimDMAOwner(Self.container) == .noMemory)
        Self.expectOwned(group, by: nil, count: 0, attached: .dma)
        #expect(group.claimDMAOwner(Self.container) == nil)
    }

    @Test("a driver without IOMMU_DOMAIN_BLOCKED blocks with an empty unmanaged domain")
    func unmanagedBlockingFallback() throws {
        let machine = try Self.vfioMachine(abilities: IOMMUDriverAbilities(family: .intel,
                                                                           domainTypes: [.identity, .dma, .unmanaged]))
        let group = try Section14.group5(machine)
        #expect(group.claimDMAOwner(Self.container) == nil)
        Self.expectOwned(group, by: Self.container, count: 1, attached: .unmanaged)
    }

    @Test("attach of the blocking domain fails: the claim returns the errno, the group stays on its default domain")
    func blockingAttachFails() throws {
        let machine = try Self.vfioMachine(siblings: [Section14.sibling(1, driver: "vfio-pci")])
        let group = try Section14.group5(machine)
        try machine.faults.arm(.attach, .init(errno: .ioError))
        #expect(group.claimDMAOwner(Self.container) == .ioError)
        Self.expectOwned(group, by: nil, count: 0, attached: .dma)
    }
}
