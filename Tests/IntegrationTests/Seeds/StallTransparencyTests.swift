import Foundation
import Glibc
import Testing

/// A stall only delays: at every fault point, the same steps with a stall
/// armed there (every time it is reached) end in the same state as without
/// it, so a stall never leaks a lock or leaves a change half-applied.
@Suite("Stalls change nothing but time")
struct StallTransparencyTests {
    typealias D = DefaultPCI

    /// Steps that pass every fault point: type changes (domain allocation,
    /// attach, flush queue), a VFIO claim (blocking domain), a reset of
    /// the ATS NIC (reset prepare and done), its deferred attach, a bind.
    private func steps(_ m: MountedMachine, stall point: String?) throws -> String {
        let pci = SysfsPCI(m)
        if let point { try m.ctlOK("inject", point, "--stall", "20ms", "--always") }
        #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
        #expect(Syscall.write(pci.type(4), "DMA") == .ok(3))
        #expect(Syscall.write(pci.type(4), "DMA-FQ") == .ok(6))
        try m.ctlOK("vfio", "attach", "--container", "c1", "4")
        try m.ctlOK("vfio", "detach", "4")
        #expect(Syscall.write(pci.device(D.nic, "reset"), "1") == .ok(1))
        try m.ctlOK("dma-map", D.nic)
        #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
        if let point { try m.ctlOK("inject", "clear", point) }
        return try m.ctlOK("dump")
    }

    static let points = ["domain-alloc", "attach", "fq-init", "blocking-domain-alloc", "reset-prepare", "reset-done",
                         "deferred-attach", "probe"]

    @Test("the state after a stall equals the state without it", arguments: points)
    func sameState(point: String) throws {
        let machine = PCIDevResetIOMMUPrepareTests.machine.replacingOccurrences(of: #""reset_ms": 1500"#, with: #""reset_ms": 10"#)
        let plain = try withTopology(machine) { try steps($0, stall: nil) }
        let stalled = try withTopology(machine) { try steps($0, stall: point) }
        #expect(stalled == plain)
    }
}
