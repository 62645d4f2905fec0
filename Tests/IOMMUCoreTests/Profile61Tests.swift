import IOMMUCore
import SystemPackage
import Testing

/// The `linux-6.1` profile (§11 of the behaviour reference, §14 cases
/// 52–56): `type` can only change in a single-device group whose device has
/// no driver, except the live DMA→DMA-FQ upgrade; an explicit type the
/// driver cannot allocate falls back to DMA.
@Suite("profile linux-6.1 (§11)")
struct Profile61Tests {
    static let moreThanOne = "iommu: Cannot change default domain: Group has more than one device"
    static let stillBound = "iommu: Device is still bound to driver"

    /// §14's machine booted with the 6.1 profile.
    static func machine(_ target: TestDevice = Section14.targetDevice(), siblings: [TestDevice] = [],
                        commandLine: String = "", abilities: IOMMUDriverAbilities = .intel) throws -> Machine {
        try Machine(spec: .test(Section14.rootBus + [target] + siblings, boot: BootOptions(commandLine: commandLine),
                                units: [.intel("dmar0", abilities)]),
                    profile: .linux6_1)
    }

    @Test("§14.52 two-device group: every token → EINVAL with the singleton line, even DMA-FQ on DMA")
    func case52() throws {
        let machine = try Self.machine(siblings: [Section14.sibling(1)], commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        expectWrite("identity", to: group, of: machine, .err(.invalidArgument, "DMA"), logs: [Self.moreThanOne])
        expectWrite("DMA-FQ", to: group, of: machine, .err(.invalidArgument, "DMA"), logs: [Self.moreThanOne])
        expectWrite("auto\n", to: group, of: machine, .err(.invalidArgument, "DMA"), logs: [Self.moreThanOne])
        // The token is parsed first: a bad one logs nothing.
        expectWrite("bogus", to: group, of: machine, .err(.invalidArgument, "DMA"))
    }

    @Test("§14.53 a bound driver, whichever, refuses identity with EBUSY",
          arguments: ["e1000e", "vfio-pci", "pci-stub", "pcieport"])
    func case53(driver: String) throws {
        let machine = try Self.machine(Section14.targetDevice(driver: driver), commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        expectWrite("identity", to: group, of: machine, .err(.resourceBusy, "DMA"), logs: [Self.stillBound])
        expectWrite("DMA", to: group, of: machine, .err(.resourceBusy, "DMA"), logs: [Self.stillBound])
        // The live upgrade is the exception; once DMA-FQ, even DMA-FQ is refused.
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
        expectWrite("DMA-FQ\n", to: group, of: machine, .err(.resourceBusy, "DMA-FQ"), logs: [Self.stillBound])
        #expect(try machine.unbind(Section14.target) == nil)
        expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
        expectWrite("auto", to: group, of: machine, .ok(4, "DMA"))
    }

    @Test("§14.54 VFIO owns the singleton group, default DMA: DMA-FQ → EBUSY, not assigned to the default domain")
    func case54() throws {
        let machine = try Self.machine(Section14.targetDevice(driver: "vfio-pci"), commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        #expect(group.claimDMAOwner(DMAOwner("vfio-container")) == nil)
        expectWrite("DMA-FQ", to: group, of: machine, .err(.resourceBusy, "DMA"),
                    logs: ["vfio-pci \(Section14.target): Group not assigned to default domain"])
        expectWrite("identity", to: group, of: machine, .err(.resourceBusy, "DMA"), logs: [Self.stillBound])
        group.releaseDMAOwner()
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
    }

    @Test("§14.55 untrusted device: DMA-FQ → EINVAL, it cannot be in a Translated domain")
    func case55() throws {
        let machine = try Self.machine(Section14.targetDevice(untrusted: true))
        let group = try Section14.group5(machine)
        // The boot gave it the DMA it needs, not the global DMA-FQ.
        #expect(group.typeText == "DMA\n")
        expectWrite("DMA-FQ", to: group, of: machine, .err(.invalidArgument, "DMA"),
                    logs: ["pci \(Section14.target): Device cannot be in Translated domain"])
        expectWrite("identity", to: group, of: machine, .err(.invalidArgument, "DMA"),
                    logs: ["pci \(Section14.target): Device cannot be in Passthrough domain"])
        expectWrite("DMA", to: group, of: machine, .ok(3, "DMA"))
        expectWrite("auto", to: group, of: machine, .ok(4, "DMA"))
    }

    @Test("§14.56 a driver without identity domains: identity → count, type DMA, with the fallback warning")
    func case56() throws {
        let abilities = IOMMUDriverAbilities(family: .intel, domainTypes: [.blocked, .dma, .unmanaged])
        let machine = try Self.machine(abilities: abilities)
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA-FQ\n")
        expectWrite("identity", to: group, of: machine, .ok(8, "DMA"), logs: [
            "iommu: Failed to allocate default IOMMU domain of type 4 for group (null) - Falling back to IOMMU_DOMAIN_DMA",
        ])
        #expect(group.snapshot.isOnDefaultDomain)
        #expect(group.snapshot.attachedDomainType == .dma)
    }

    @Test("boot log: v6.1's \"%s %s\" leaves a trailing space, or one space before the command-line note")
    func bootLog() throws {
        let plain = try Self.machine()
        #expect(Array(plain.log.texts.prefix(2)) == [
            "iommu: Default domain type: Translated ",
            "iommu: DMA domain TLB invalidation policy: lazy mode ",
        ])
        let strict = try Self.machine(commandLine: "iommu.strict=1")
        #expect(Array(strict.log.texts.prefix(2)) == [
            "iommu: Default domain type: Translated ",
            "iommu: DMA domain TLB invalidation policy: strict mode (set via kernel command line)",
        ])
    }

    @Test("hot-unplug logs `Removing from iommu group N` (v6.1 only)")
    func removalLog() throws {
        let machine = try Self.machine(Section14.targetDevice(driver: "e1000e"))
        let (_, lines) = machine.logging { machine.remove(try! machine.device(Section14.target)) }
        #expect(lines == ["pci \(Section14.target): Removing from iommu group 5"])
    }

    @Test("boot: conflicting device wishes log `Device needs domain type` and the group takes the global default")
    func bootConflict() throws {
        let machine = try Self.machine(Section14.targetDevice(wish: .identity),
                                       siblings: [TestDevice("0000:03:00.1", group: "5", untrusted: true, behind: Section14.rootPort)])
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA-FQ\n")
        #expect(machine.log.texts.contains(
            "pci 0000:03:00.1: Device needs domain type Translated, but device 0000:03:00.0 in the same iommu group requires type Passthrough - using default"))
    }
}
