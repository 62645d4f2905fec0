import Foundation
import Glibc
import Testing
import Topology

/// Seed 2, `pci_dev_reset_iommu_prepare` / `pci_dev_reset_iommu_done`
/// (linux-7.1): while an ATS device resets, its RID sits on the blocking
/// domain and its group refuses every domain change (a `type` change, an
/// ownership claim through a sibling, a deferred attach) with EBUSY; a
/// claim through the resetting device itself (a legacy VFIO attach, an
/// iommufd bind of it) waits instead, as it takes the device lock, which
/// the reset holds (seed 1); a sibling hot-added
/// meanwhile joins the group's domain, not the blocking one. linux-6.12
/// has no fencing: the same requests succeed during the reset.
///
/// The reset takes 1.5 s (`reset_ms`); a 1 ms stall at `reset-prepare`
/// says when it has begun, so every request below lands inside it.
@Suite("Seed: pci_dev_reset_iommu_prepare fences the group during a reset")
struct PCIDevResetIOMMUPrepareTests {
    typealias D = DefaultPCI

    /// The default machine, its NIC (ATS, group 4) deferring its first
    /// attach, and its GPU (group 1) with ATS; both resets take 1.5 s.
    static let machine = Topology.defaultMachineJSON
        .replacingOccurrences(of: #""ats": true,"#, with: #""ats": true, "attach_deferred": true, "reset_ms": 1500,"#)
        .replacingOccurrences(of: #""group": 1, "driver": "nouveau" }"#,
                              with: #""group": 1, "driver": "nouveau", "ats": true, "reset_ms": 1500 }"#)

    /// Resets `bdf` in the background and returns once the reset is inside
    /// its fence.
    private func startReset(_ m: MountedMachine, _ bdf: String) throws -> Background<Syscall.Outcome> {
        try m.armStall("reset-prepare", ms: 1)
        let path = SysfsPCI(m).device(bdf, "reset")
        let reset = Background { Syscall.write(path, "1") }
        try m.waitUntilFired("reset-prepare")
        return reset
    }

    @Test("linux-7.1: a type change, an iommufd claim and a deferred attach during the reset get EBUSY; after it they work")
    func fenced() throws {
        #expect(Self.machine.contains(#""nouveau", "ats": true"#))
        try withTopology(Self.machine) { m in
            let pci = SysfsPCI(m)
            let reset = try startReset(m, D.nic)
            #expect(Syscall.write(pci.type(4), "identity") == .failed(EBUSY))
            #expect(m.ctl("iommufd", "bind", "--context", "ctx", "0000:00:1c.4").failure
                    == "EBUSY: iommufd bind of 0000:00:1c.4 to context ctx: Device or resource busy")
            #expect(m.ctl("dma-map", D.nic).failure == "EBUSY: dma-map of 0000:03:00.0: Device or resource busy")
            #expect(!reset.isDone, "the 1.5 s reset ended before the checks ran")
            // A legacy VFIO claim waits for the reset's device lock, and then works.
            let attach = Background(m.ctlRun("vfio", "attach", "--container", "c1", "4"))
            #expect(reset.wait() == .ok(1))
            #expect(attach.wait()?.status == 0)
            try m.ctlOK("vfio", "detach", "4")
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
            try m.ctlOK("dma-map", D.nic)
            try m.ctlOK("iommufd", "bind", "--context", "ctx", "0000:00:1c.4")
        }
    }

    @Test("linux-6.12 does not fence: the same requests succeed during the reset")
    func notFencedOn612() throws {
        try withTopology(Self.machine.replacingOccurrences(of: #""kernel": {"#, with: #""profile": "linux-6.12", "kernel": {"#)) { m in
            let pci = SysfsPCI(m)
            // 6.12 has no reset-prepare hook: the reset's own length is the window.
            let reset = Background { Syscall.write(pci.device(D.nic, "reset"), "1") }
            usleep(100_000)
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
            try m.ctlOK("dma-map", D.nic)
            try m.ctlOK("iommufd", "bind", "--context", "ctx", "0000:00:1c.4")
            #expect(!reset.isDone, "the 1.5 s reset ended before the checks ran")
            #expect(reset.wait() == .ok(1))
        }
    }

    @Test("a sibling hot-added during the reset joins the group's domain; after the reset the group changes type as one")
    func siblingDuringReset() throws {
        try withTopology(Self.machine) { m in
            let pci = SysfsPCI(m)
            let audio = "0000:01:00.1", gpu = "0000:01:00.0"
            #expect(Syscall.write(pci.device(audio, "remove"), "1") == .ok(1))
            let reset = try startReset(m, gpu)
            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.members(1) == ["0000:00:01.0", gpu, audio])
            #expect(!reset.isDone, "the 1.5 s reset ended before the rescan")
            #expect(reset.wait() == .ok(1))
            // The group is whole again: with its drivers gone it can change
            // type, which moves every member (none left on the blocking domain).
            #expect(Syscall.write(pci.driverKnob("nouveau", "unbind"), gpu) == .ok(12))
            #expect(Syscall.write(pci.driverKnob("snd_hda_intel", "unbind"), audio) == .ok(12))
            #expect(Syscall.write(pci.type(1), "identity") == .ok(8))
            #expect(Syscall.write(pci.type(1), "DMA") == .ok(3))
            expectConsistentTree(m)
            try expectDumpRoundTrip(m)
        }
    }

    @Test("a dump taken while a reset is stalled at reset-done lists the running reset; once it ends the group changes again")
    func stalledDone() throws {
        try withTopology(Self.machine) { m in
            let pci = SysfsPCI(m)
            try m.armStall("reset-done", ms: 1000)
            let reset = try startReset(m, D.nic)
            let resets = try #require(Background { try? m.dumpState()["resets"] }.wait())
            #expect(resets?.compactText == #"["0000:03:00.0"]"#)
            #expect(reset.wait() == .ok(1))
            #expect(try m.dumpState()["resets"] == nil)
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
        }
    }
}
