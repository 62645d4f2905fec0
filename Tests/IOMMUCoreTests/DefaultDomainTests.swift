import IOMMUCore
import SystemPackage
import Testing

/// §4.3 `iommu_setup_default_domain` and the DMA-ops step after it:
/// allocation fallbacks, the flush queue, device wishes.
@Suite("default domain setup (§4.3)")
struct DefaultDomainTests {
    @Test("DMA-FQ on a unit without IOMMU_CAP_DEFERRED_FLUSH: a reallocation ends as DMA, silently")
    func dmaFQWithoutDeferredFlush() throws {
        let machine = try Section14.machine(abilities: IOMMUDriverAbilities(family: .intel, deferredFlush: false))
        let group = try Section14.group5(machine)
        // The boot default DMA-FQ was already downgraded by iommu_dma_init_domain.
        #expect(group.typeText == "DMA\n")
        try #require(group.write("identity") == .success(8))
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA"))
        #expect(group.snapshot.attachedDomainType == .dma)
    }

    @Test("live DMA→DMA-FQ has no capability check, and a later same-type write keeps the initialised domain (dma-iommu: start_pfn already set)")
    func liveFQWithoutDeferredFlushSticks() throws {
        let machine = try Section14.machine(abilities: IOMMUDriverAbilities(family: .intel, deferredFlush: false))
        let group = try Section14.group5(machine)
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
        // iommu_setup_default_domain reuses the DMA-FQ default domain; iommu_setup_dma_ops →
        // iommu_dma_init_domain returns early for an already-initialised IOVA domain, so
        // the DEFERRED_FLUSH downgrade (which only runs on first initialisation) is not redone.
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA-FQ"))
    }

    @Test("a new DMA-FQ domain whose flush queue fails is downgraded to DMA; the write still succeeds")
    func flushQueueFailureOnReallocation() throws {
        let machine = try Section14.machine(siblings: [Section14.sibling(1)])
        let group = try Section14.group5(machine)
        try #require(group.write("identity") == .success(8))
        try machine.faults.arm(.flushQueueInit, .init(errno: .noMemory))
        expectWrite("DMA-FQ", to: group, of: machine, .ok(6, "DMA"),
                    logs: ["iova flush queue initialization failed"])
        #expect(group.snapshot.attachedPerDevice == [.dma, .dma])
    }

    @Test("auto falls back to DMA with the type-11 warning when DMA-FQ cannot be allocated")
    func autoFallbackFromDMAFQ() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        try #require(group.write("identity") == .success(8))
        try machine.faults.arm(.domainAlloc, .init(errno: .noMemory))
        expectWrite("auto", to: group, of: machine, .ok(4, "DMA"), logs: [
            "iommu: Failed to allocate default IOMMU domain of type 11 for group (null) - Falling back to IOMMU_DOMAIN_DMA",
        ])
    }

    @Test("a passthrough boot on a unit without identity falls back to DMA with the type-4 warning")
    func bootFallbackFromIdentity() throws {
        let abilities = IOMMUDriverAbilities(family: .intel, domainTypes: [.blocked, .dma, .unmanaged])
        let machine = try Section14.machine(commandLine: "iommu=pt", abilities: abilities)
        let group = try Section14.group5(machine)
        #expect(group.typeText == "DMA\n")
        let warning = "iommu: Failed to allocate default IOMMU domain of type 4 for group (null) - Falling back to IOMMU_DOMAIN_DMA"
        // One per group, each right after its last "Adding" line.
        #expect(machine.log.texts.filter { $0 == warning }.count == machine.groups.count)
    }

    @Test("auto with a global default of DMA gets no fallback: a failed allocation is EINVAL, silently")
    func autoWithoutFallback() throws {
        let machine = try Section14.machine(commandLine: "iommu.strict=1")
        let group = try Section14.group5(machine)
        try #require(group.write("identity") == .success(8))
        try machine.faults.arm(.domainAlloc, .init(errno: .noMemory))
        expectWrite("auto", to: group, of: machine, .err(.invalidArgument, "identity"))
        #expect(group.snapshot.attachedDomainType == .identity)
    }

    @Test("an explicit type never falls back: a failed allocation returns its errno")
    func explicitTypeWithoutFallback() throws {
        let machine = try Section14.machine()
        let group = try Section14.group5(machine)
        try machine.faults.arm(.domainAlloc, .init(errno: .noMemory))
        expectWrite("DMA", to: group, of: machine, .err(.noMemory, "DMA-FQ"))
    }

    // MARK: Device wishes

    @Test("conflicting def_domain_type wishes in one group: the error line, identity wins either way",
          arguments: [(DomainType.dma, DomainType.identity), (.identity, .dma)])
    func conflictingWishes(first: DomainType, second: DomainType) throws {
        let machine = try Section14.machine(Section14.targetDevice(wish: first),
                                            siblings: [TestDevice("0000:03:00.1", group: "5", wish: second,
                                                                  behind: Section14.rootPort)])
        let group = try Section14.group5(machine)
        let line = "pci 0000:03:00.1: IOMMU driver error, requesting conflicting def_domain_type, "
            + "\(first.logName) and \(second.logName), for devices in group 5."
        #expect(machine.log.texts.contains(line))
        #expect(group.typeText == "identity\n")
        // Every non-live store recomputes the wish and complains again.
        expectWrite("auto", to: group, of: machine, .ok(4, "identity"), logs: [line])
    }

    @Test("an untrusted device whose driver wishes identity: `Device is not trusted…refusing to probe.`")
    func untrustedWithIdentityWish() throws {
        let machine = try Section14.machine(Section14.targetDevice(wish: .identity, untrusted: true))
        #expect(machine.log.texts.contains(
            "pci 0000:03:00.0: Device is not trusted, but driver is overriding group 5 to Passthrough, refusing to probe."))
        #expect(try Section14.group5(machine).snapshot.defaultDomainType == nil)
    }

    @Test("an untrusted device whose driver wishes DMA is fine: DMA, no complaint")
    func untrustedWithDMAWish() throws {
        let machine = try Section14.machine(Section14.targetDevice(wish: .dma, untrusted: true))
        #expect(try Section14.group5(machine).typeText == "DMA\n")
        #expect(!machine.log.texts.contains { $0.contains("not trusted") || $0.contains("conflicting") })
    }
}
