import IOMMUCore
import SystemPackage
import Testing

/// The kernel profiles between 6.1 and 7.1 (§0 version map, §11): one test
/// per profile flag, each run on the profiles on either side of the change,
/// and a table that every profile reproduces the oracle machine the way the
/// transcripts' kernels do wherever the versions agree.
@Suite("kernel profiles")
struct ProfileTests {
    /// §14's machine booted with `profile`.
    static func machine(_ profile: KernelProfile, _ target: TestDevice = Section14.targetDevice(),
                        siblings: [TestDevice] = [], commandLine: String = "",
                        abilities: IOMMUDriverAbilities = .intel) throws -> Machine {
        try Machine(spec: .test(Section14.rootBus + [target] + siblings, boot: BootOptions(commandLine: commandLine),
                                units: [.intel("dmar0", abilities)]),
                    profile: profile)
    }

    static let withoutIdentity = IOMMUDriverAbilities(family: .intel, domainTypes: [.blocked, .dma, .unmanaged],
                                                      unsupportedTypeErrno: .notSupported)

    @Test("profiles are listed oldest first under their own names")
    func names() {
        #expect(KernelProfile.all.map(\.name) == ["linux-6.1", "linux-6.4", "linux-6.5", "linux-6.6", "linux-6.7",
                                                  "linux-6.8", "linux-6.9", "linux-6.10", "linux-6.11", "linux-6.12",
                                                  "linux-7.1"])
        #expect(KernelProfile.named("linux-6.9") == .linux6_9)
        #expect(KernelProfile.named("linux-6.3") == nil)
    }

    @Test("singletonTypeStore (6.1 → 6.4): a two-device group may change type once no driver owns it")
    func singletonRule() throws {
        let old = try Self.machine(.linux6_1, siblings: [Section14.sibling(1)])
        expectWrite("identity", to: try Section14.group5(old), of: old, .err(.invalidArgument, "DMA-FQ"),
                    logs: ["iommu: Cannot change default domain: Group has more than one device"])
        let new = try Self.machine(.linux6_4, siblings: [Section14.sibling(1)])
        expectWrite("identity", to: try Section14.group5(new), of: new, .ok(8, "identity"))
        // The device lock rule is gone too: a DMA-managing driver does not refuse.
        let stub = try Self.machine(.linux6_4, Section14.targetDevice(driver: "pci-stub"))
        expectWrite("identity", to: try Section14.group5(stub), of: stub, .ok(8, "identity"))
        // A driver owning the group is refused by the ownership rule, silently.
        let bound = try Self.machine(.linux6_4, Section14.targetDevice(driver: "e1000e"))
        expectWrite("identity", to: try Section14.group5(bound), of: bound, .err(.notPermitted, "DMA-FQ"))
    }

    @Test("changesDeviceDefaultDomain (6.4 → 6.5): an identity the driver lacks falls back to DMA")
    func allocationFallback() throws {
        let old = try Self.machine(.linux6_4, abilities: Self.withoutIdentity)
        expectWrite("identity", to: try Section14.group5(old), of: old, .ok(8, "DMA"), logs: [
            "iommu: Failed to allocate default IOMMU domain of type 4 for group (null) - Falling back to IOMMU_DOMAIN_DMA",
        ])
        let new = try Self.machine(.linux6_5, abilities: Self.withoutIdentity)
        expectWrite("identity", to: try Section14.group5(new), of: new, .err(.noDevice, "DMA-FQ"))
    }

    @Test("changesDeviceDefaultDomain (6.4 → 6.5): a contradicted wish is logged, a conflict means no wish")
    func wishChecks() throws {
        let untrusted = Section14.targetDevice(untrusted: true)
        let old = try Self.machine(.linux6_4, untrusted)
        expectWrite("DMA-FQ", to: try Section14.group5(old), of: old, .ok(6, "DMA-FQ"))
        expectWrite("identity", to: try Section14.group5(old), of: old, .err(.invalidArgument, "DMA-FQ"),
                    logs: ["pci \(Section14.target): Device cannot be in Passthrough domain"])
        let new = try Self.machine(.linux6_5, untrusted)
        expectWrite("identity", to: try Section14.group5(new), of: new, .err(.invalidArgument, "DMA"))

        // Members wishing identity and DMA: 6.4 warns and "auto" takes the
        // global default; 6.5 lets identity win.
        let conflicting = (Section14.targetDevice(wish: .identity), [TestDevice("0000:03:00.1", group: "5", wish: .dma,
                                                                                behind: Section14.rootPort)])
        let warn = "pci 0000:03:00.1: Device needs domain type Translated, but device \(Section14.target) in the same iommu group requires type Passthrough - using default"
        let before = try Self.machine(.linux6_4, conflicting.0, siblings: conflicting.1)
        expectWrite("auto", to: try Section14.group5(before), of: before, .ok(4, "DMA-FQ"), logs: [warn])
        let after = try Self.machine(.linux6_5, conflicting.0, siblings: conflicting.1)
        expectWrite("auto", to: try Section14.group5(after), of: after, .ok(4, "identity"), logs: [
            "pci 0000:03:00.1: IOMMU driver error, requesting conflicting def_domain_type, Passthrough and Translated, for devices in group 5.",
        ])
    }

    @Test("bootConflictUsesDefault (6.4 → 6.5): conflicting wishes at boot")
    func bootConflict() throws {
        let target = Section14.targetDevice(wish: .identity)
        let sibling = TestDevice("0000:03:00.1", group: "5", wish: .dma, behind: Section14.rootPort)
        let old = try Self.machine(.linux6_4, target, siblings: [sibling])
        #expect(try Section14.group5(old).typeText == "DMA-FQ\n")
        #expect(old.log.texts.contains { $0.hasPrefix("pci 0000:03:00.1: Device needs domain type Translated") })
        let new = try Self.machine(.linux6_5, target, siblings: [sibling])
        #expect(try Section14.group5(new).typeText == "identity\n")
        #expect(new.log.texts.contains { $0.hasPrefix("pci 0000:03:00.1: IOMMU driver error") })
    }

    @Test("bootLogSpacedSuffix (6.4 → 6.5): the policy lines lose their trailing space")
    func bootLogSpacing() throws {
        #expect(try Array(Self.machine(.linux6_4).log.texts.prefix(2)) == [
            "iommu: Default domain type: Translated ", "iommu: DMA domain TLB invalidation policy: lazy mode ",
        ])
        #expect(try Array(Self.machine(.linux6_5).log.texts.prefix(2)) == [
            "iommu: Default domain type: Translated", "iommu: DMA domain TLB invalidation policy: lazy mode",
        ])
    }

    @Test("checksDeferredFlushCapability (6.4 → 6.5): a driver that cannot defer flushes gets DMA for auto")
    func deferredFlushCapability() throws {
        let abilities = IOMMUDriverAbilities(family: .intel, deferredFlush: false)
        for (profile, type) in [(KernelProfile.linux6_4, "DMA-FQ"), (.linux6_5, "DMA")] {
            let machine = try Self.machine(profile, abilities: abilities)
            let group = try Section14.group5(machine)
            #expect(group.typeText == type + "\n", "boot, \(profile)")
            expectWrite("identity", to: group, of: machine, .ok(8, "identity"))
            expectWrite("auto", to: group, of: machine, .ok(4, type))
        }
    }

    @Test("logsGroupRemoval (6.1 → 6.4): hot-unplug no longer logs the removal")
    func removalLog() throws {
        for (profile, logs) in [(KernelProfile.linux6_1, ["pci \(Section14.target): Removing from iommu group 5"]),
                                (.linux6_4, [])] {
            let machine = try Self.machine(profile)
            let device = try machine.device(Section14.target)
            let (_, lines) = machine.logging { machine.remove(device) }
            #expect(lines == logs, "\(profile)")
        }
    }

    @Test("namesPCITypesAndResources (6.7 → 6.8): the enumeration line of a rescanned device names its type")
    func enumerationLine() throws {
        for (profile, suffix) in [(KernelProfile.linux6_7, "class 0x020000"), (.linux6_8, "class 0x020000 conventional PCI endpoint")] {
            let machine = try Self.machine(profile)
            machine.remove(try machine.device(Section14.target))
            let (_, lines) = machine.logging { machine.rescan() }
            let enumeration = lines.first { $0.hasPrefix("pci \(Section14.target): [") }
            #expect(enumeration?.hasSuffix("] type 00 " + suffix) == true, "\(profile): \(lines)")
        }
    }

    @Test("freesDefaultDomainWithLastDevice (6.5 → 6.6): a store on an emptied group")
    func emptiedGroup() throws {
        for (profile, outcome) in [(KernelProfile.linux6_5, WriteOutcome.err(.notPermitted, "DMA-FQ")),
                                   (.linux6_6, .err(.invalidArgument, "unknown"))] {
            let machine = try Self.machine(profile)
            let group = try Section14.group5(machine)
            machine.remove(try machine.device(Section14.target))
            expectWrite("DMA", to: group, of: machine, outcome)
        }
    }

    @Test("returnsAllocatorErrno (6.6 → 6.7): an unsupported explicit type fails with the driver's errno")
    func allocatorErrno() throws {
        for (profile, errno) in [(KernelProfile.linux6_6, Errno.noDevice), (.linux6_7, .notSupported)] {
            let machine = try Self.machine(profile, abilities: Self.withoutIdentity)
            expectWrite("identity", to: try Section14.group5(machine), of: machine, .err(errno, "DMA-FQ"))
        }
    }

    @Test("setsUpDMAOpsUnderMutex (6.9 → 6.10): whether DMA-FQ is ever seen before the downgrade")
    func dmaOpsUnderMutex() throws {
        let abilities = IOMMUDriverAbilities(family: .intel, deferredFlush: false)
        let expected: [(KernelProfile, [MachineEvent])] = [
            (.linux6_9, [.typeChanged(group: 5, from: .identity, to: .dmaFQ), .typeChanged(group: 5, from: .dmaFQ, to: .dma)]),
            (.linux6_10, [.typeChanged(group: 5, from: .identity, to: .dma)]),
        ]
        for (profile, events) in expected {
            let machine = try Self.machine(profile, commandLine: "iommu=pt", abilities: abilities)
            let group = try Section14.group5(machine)
            #expect(group.typeText == "identity\n")
            let seen = SharedValue<[MachineEvent]>([])
            let token = machine.subsystem.events.subscribe { event in
                if case .typeChanged = event { seen.withLock { $0.append(event) } }
            }
            defer { machine.subsystem.events.unsubscribe(token) }
            expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA"))
            #expect(seen.withLock { $0 } == events, "\(profile)")
        }
    }

    // MARK: The oracle machine under every profile

    /// The profile whose transcript `profile` must match: the 6.1 one for
    /// kernels with 6.1's store rule or boot log, else the 6.12 one.
    static func reference(for profile: KernelProfile, boot: Bool) -> KernelProfile {
        let sixOne = boot ? profile.bootLogSpacedSuffix : profile.singletonTypeStore
        return sixOne ? .linux6_1 : .linux6_12
    }

    static func oracleMachine(_ profile: KernelProfile) throws -> Machine {
        try Machine(spec: .test(Oracle612.devices, units: [.intel("dmar0", .intelCachingMode)]), profile: profile)
    }

    /// The `groups` section's writes in every driver state of `script`,
    /// with each write's outcome and log lines.
    static func groupsSection(_ profile: KernelProfile, _ script: OracleTests.GroupScript) throws -> [String] {
        let machine = try oracleMachine(profile)
        let group = try #require(machine.group(id: script.group))
        var seen: [String] = []
        for unbind in [nil] + script.then.map(\.unbind) {
            if let unbind { seen.append("unbind \(unbind): \(String(describing: try machine.unbind(unbind)))") }
            for data in OracleTests.sequence {
                let (result, lines) = machine.logging { group.write(data) }
                seen.append("\(WriteOutcome(result: result, typeText: group.typeText)) \(lines)")
            }
        }
        return seen
    }

    @Test("every profile boots the oracle machine into the transcripts' groups and log", arguments: KernelProfile.all)
    func oracleBoot(_ profile: KernelProfile) throws {
        let machine = try Self.oracleMachine(profile)
        let reference = try Self.oracleMachine(Self.reference(for: profile, boot: true))
        #expect(machine.log.texts == reference.log.texts)
        #expect(machine.groups.map(\.snapshot) == reference.groups.map(\.snapshot))
        #expect(machine.groups.map(\.typeText) == reference.groups.map(\.typeText))
    }

    @Test("every profile answers the transcripts' `groups` writes as its reference kernel",
          arguments: KernelProfile.all, OracleTests.scripts)
    func oracleGroups(_ profile: KernelProfile, _ script: OracleTests.GroupScript) throws {
        let reference = Self.reference(for: profile, boot: false)
        #expect(try Self.groupsSection(profile, script) == Self.groupsSection(reference, script))
    }
}
