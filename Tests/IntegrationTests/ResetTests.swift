import Foundation
import Glibc
import Testing
import Topology

/// `reset` through the mount: the kstrtoul parsing of the oracle's reset
/// section, and reset fencing (kernel-behaviour §7): while an ATS device
/// resets (100 ms), its group's domain changes get EBUSY; the live
/// DMA→DMA-FQ switch and same-type writes do not change the domain and pass.
@Suite("Reset") struct ResetTests {
    typealias D = DefaultPCI

    @Test("reset accepts exactly 1 (and 1 with a newline); a reset leaves the group's type alone")
    func resetErrnos() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            for bdf in [D.nvme, D.nic] {
                let reset = pci.device(bdf, "reset")
                for bad in ["0", "2", "x", "-1", " 1"] {
                    #expect(Syscall.write(reset, bad) == .failed(EINVAL), "\(bdf) \(bad.debugDescription)")
                }
                #expect(Syscall.write(reset, "") == .ok(0))
                #expect(Syscall.write(reset, "1\n") == .ok(2))
                #expect(Syscall.write(reset, "1") == .ok(1))
            }
            // Bound (nvme): the type and the EPERM are the same before and after.
            #expect(pci.typeText(3) == "DMA-FQ")
            #expect(Syscall.write(pci.type(3), "identity") == .failed(EPERM))
            #expect(pci.bound(to: "nvme") == [D.nvme])
            // Unbound: an identity written before survives two resets.
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
            #expect(Syscall.write(pci.device(D.nic, "reset"), "1") == .ok(1))
            #expect(Syscall.write(pci.device(D.nic, "reset"), "1") == .ok(1))
            #expect(pci.typeText(4) == "identity")
        }
    }

    /// The default machine with a 1.5 s NIC reset: the checks made during
    /// it fit whatever the load of the machine running the tests.
    static let slowReset = Topology.defaultMachineJSON.replacingOccurrences(of: #""ats": true,"#, with: #""ats": true, "reset_ms": 1500,"#)

    @Test("during a reset of the ATS NIC, a new domain for its group is refused with EBUSY")
    func fenceRefusesDomainChange() throws {
        try withTopology(Self.slowReset) { m in
            let pci = SysfsPCI(m)
            let type = pci.type(4)
            let reset = whileResetting(m, D.nic) {
                #expect(Syscall.write(type, "identity") == .failed(EBUSY))
                #expect(pci.typeText(4) == "DMA-FQ")
                #expect(Syscall.write(type, "DMA") == .failed(EBUSY))
                #expect(pci.typeText(4) == "DMA-FQ")
            }
            #expect(reset == .ok(1))
            #expect(Syscall.write(type, "identity") == .ok(8))
            #expect(pci.typeText(4) == "identity")
        }
    }

    @Test("during the reset, the same type and the live DMA → DMA-FQ switch still succeed")
    func fenceLetsLiveSwitchThrough() throws {
        try withTopology(Self.slowReset) { m in
            let pci = SysfsPCI(m)
            let type = pci.type(4)
            #expect(Syscall.write(type, "DMA") == .ok(3))
            let reset = whileResetting(m, D.nic) {
                #expect(Syscall.write(type, "DMA") == .ok(3))
                #expect(Syscall.write(type, "DMA-FQ") == .ok(6))
                #expect(pci.typeText(4) == "DMA-FQ")
                #expect(Syscall.write(type, "DMA-FQ") == .ok(6))
                #expect(Syscall.write(type, "auto") == .ok(4))
                #expect(Syscall.write(type, "identity") == .failed(EBUSY))
                #expect(pci.typeText(4) == "DMA-FQ")
            }
            #expect(reset == .ok(1))
            #expect(Syscall.write(type, "DMA") == .ok(3))
            #expect(pci.typeText(4) == "DMA")
        }
    }

    @Test("a reset of a device without ATS does not fence its group")
    func noFenceWithoutATS() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            // 8139too uses the DMA API: unbind it so that group 6 may change.
            #expect(Syscall.write(pci.driverKnob("8139too", "unbind"), D.rtl8139) == .ok(12))
            let reset = whileResetting(m, D.usbOHCI, fenced: false) {
                #expect(Syscall.write(pci.type(6), "identity") == .ok(8))
                #expect(pci.typeText(6) == "identity")
                #expect(Syscall.write(pci.type(6), "DMA") == .ok(3))
            }
            #expect(reset == .ok(1))
            #expect(pci.typeText(6) == "DMA")
            // Group 3 likewise for the NVMe (no ATS).
            #expect(Syscall.write(pci.driverKnob("nvme", "unbind"), D.nvme) == .ok(12))
            let nvmeReset = whileResetting(m, D.nvme, fenced: false) {
                #expect(Syscall.write(pci.type(3), "identity") == .ok(8))
            }
            #expect(nvmeReset == .ok(1))
        }
    }
}

/// Starts `echo 1 > reset` of `bdf` on another thread, runs `body` while
/// the reset runs, checks that it was still running when `body` finished,
/// and returns the reset's outcome. A `fenced` reset (an ATS device on a
/// fencing kernel) says when its fence is up through a 1 ms stall at
/// `reset-prepare`; any other reset is given 20 ms to start.
func whileResetting(_ m: MountedMachine, _ bdf: String, fenced: Bool = true, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () -> Void) -> Syscall.Outcome {
    let path = SysfsPCI(m).device(bdf, "reset")
    if fenced { try? m.armStall("reset-prepare", ms: 1, sourceLocation: sourceLocation) }
    let reset = Background { Syscall.write(path, "1") }
    if fenced {
        try? m.waitUntilFired("reset-prepare", sourceLocation: sourceLocation)
    } else {
        usleep(20_000)
    }
    body()
    #expect(!reset.isDone, "the reset of \(bdf) ended before the checks ran", sourceLocation: sourceLocation)
    return reset.wait() ?? .failed(ETIMEDOUT)
}
