import Foundation
import Glibc
import Testing
import Topology

/// Seed 3, `iommu_deferred_attach`: a device whose IOMMU driver defers its
/// first attach (`attach_deferred`) gets its group's default domain at its
/// first DMA mapping (`ctl dma-map`), under `group->mutex`; while a device
/// of the group resets (linux-7.1) it is refused with EBUSY.
@Suite("Seed: iommu_deferred_attach runs under the group's mutex, fenced by resets")
struct IOMMUDeferredAttachTests {
    typealias D = DefaultPCI

    static let machine = PCIDevResetIOMMUPrepareTests.machine

    private func nicIsMapped(_ m: MountedMachine) throws -> Bool {
        try m.dumpState()["devices"]?.arrayValue?.first { $0["address"] == .string(D.nic) }?["dma_mapped"] == .bool(true)
    }

    @Test("dma-map during a reset → EBUSY; after it → attached, and the dump says so")
    func fencedByReset() throws {
        try withTopology(Self.machine) { m in
            try m.armStall("reset-prepare", ms: 1)
            let reset = Background { Syscall.write(SysfsPCI(m).device(D.nic, "reset"), "1") }
            try m.waitUntilFired("reset-prepare")
            #expect(m.ctl("dma-map", D.nic).failure == "EBUSY: dma-map of 0000:03:00.0: Device or resource busy")
            #expect(try !nicIsMapped(m))
            #expect(reset.wait() == .ok(1))
            try m.ctlOK("dma-map", D.nic)
            #expect(try nicIsMapped(m))
            // A second mapping finds the attach done: nothing to do.
            try m.ctlOK("dma-map", D.nic)
            try expectDumpRoundTrip(m)
        }
    }

    @Test("the attach holds the group's mutex: a type change on the group waits for a stalled deferred attach")
    func underGroupMutex() throws {
        try withTopology(Self.machine) { m in
            let pci = SysfsPCI(m)
            let (map, write) = try m.expectWaiting(at: "deferred-attach", while: m.ctlRun("dma-map", D.nic)) {
                Syscall.write(pci.type(4), "identity")
            }
            #expect(map.wait()?.status == 0)
            #expect(write.wait() == .ok(8))
            #expect(try nicIsMapped(m))
            #expect(pci.typeText(4) == "identity")
        }
    }

    @Test("an injected failure of the deferred attach leaves the device waiting; the next mapping attaches it")
    func failedAttach() throws {
        try withTopology(Self.machine) { m in
            try m.ctlOK("inject", "deferred-attach", "EIO", "--once")
            #expect(m.ctl("dma-map", D.nic).failure == "EIO: dma-map of 0000:03:00.0: Input/output error")
            #expect(try !nicIsMapped(m))
            try m.ctlOK("dma-map", D.nic)
            #expect(try nicIsMapped(m))
        }
    }

    @Test("linux-6.12 does not fence the deferred attach: dma-map during a reset attaches")
    func notFencedOn612() throws {
        try withTopology(Self.machine.replacingOccurrences(of: #""kernel": {"#, with: #""profile": "linux-6.12", "kernel": {"#)) { m in
            let reset = Background { Syscall.write(SysfsPCI(m).device(D.nic, "reset"), "1") }
            usleep(100_000)
            try m.ctlOK("dma-map", D.nic)
            #expect(!reset.isDone, "the 1.5 s reset ended before the mapping")
            #expect(reset.wait() == .ok(1))
            #expect(try nicIsMapped(m))
        }
    }
}
