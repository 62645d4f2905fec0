import Foundation
import Glibc
import Testing

/// Seed 1, `vfio_group_ioctl_set_container` → the type1 backend's attach:
/// the attach holds the device lock of every member of the group (in
/// address order) for its whole length, so an unbind or a hot-remove of a
/// member cannot change the group underneath it; they wait, and run after.
/// A stall at `attach` makes the attach last long enough to place them
/// inside it. Every profile takes these locks (VFIO's model is the same for
/// all of them), so the default one shows it.
@Suite("Seed: vfio_group_ioctl_set_container holds the group's device locks")
struct VFIOGroupIoctlSetContainerTests {
    typealias D = DefaultPCI

    @Test("an unbind during a stalled container attach waits for the attach, then unbinds; the group stays the container's")
    func unbindWaits() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.device(D.nic, "driver_override"), "vfio-pci") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.nic) == .ok(12))
            let trace = try Trace(m, count: 4)
            // Inside the stall, the unbind blocks on the NIC's device lock.
            let (attach, unbind) = try m.expectWaiting(at: "attach", while: m.ctlRun("vfio", "attach", "--container", "c1", "4")) {
                Syscall.write(pci.driverKnob("vfio-pci", "unbind"), D.nic)
            }
            #expect(unbind.wait() == .ok(12))
            #expect(attach.wait()?.status == 0)
            let (status, events) = trace.finish()
            #expect(status == 0)
            // The whole attach, then the unbind.
            #expect(events == """
                domain-attached group=4 type=blocked
                owner-claimed group=4 owner=vfio-group-4
                domain-attached group=4 type=unmanaged
                driver-unbound dev=0000:03:00.0 driver=vfio-pci

                """)
            // The group is still the container's, and nothing else may use it.
            #expect(try m.containerDomains() == #"[{"name":"c1","domains":[[4]]}]"#)
            #expect(pci.driver(of: D.nic) == nil)
            #expect(Syscall.write(pci.device(D.nic, "driver_override"), "\n") == .ok(1))
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .failed(EBUSY))
            #expect(Syscall.write(pci.type(4), "identity") == .failed(EPERM))
            try m.ctlOK("vfio", "detach", "4")
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            expectConsistentTree(m)
        }
    }

    @Test("a hot-remove of a member during a stalled attach waits for it; the group keeps its owner and loses the member")
    func removeWaits() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let (attach, remove) = try m.expectWaiting(at: "attach", while: m.ctlRun("vfio", "attach", "--container", "c1", "4")) {
                Syscall.write(pci.device(D.nic, "remove"), "1")
            }
            #expect(remove.wait() == .ok(1))
            #expect(attach.wait()?.status == 0)
            #expect(pci.members(4) == ["0000:00:1c.4"])
            #expect(try m.containerDomains() == #"[{"name":"c1","domains":[[4]]}]"#)
            // The removed NIC left no trace in the group; detaching gives the
            // group back to its default domain (the driver may bind again),
            // and a rescan brings the NIC back into it.
            try m.ctlOK("vfio", "detach", "4")
            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.members(4) == ["0000:00:1c.4", D.nic])
            // The rescan probed igb, its native driver, into the group.
            #expect(pci.driver(of: D.nic) == "igb")
            #expect(Syscall.write(pci.type(4), "identity") == .failed(EPERM))
            expectConsistentTree(m)
            try expectDumpRoundTrip(m)
        }
    }

    @Test("a stall leaks no lock and no half-applied change: the state equals that of the same steps without it")
    func stallChangesNothing() throws {
        func steps(_ m: MountedMachine, stall: Bool) throws -> String {
            if stall { try m.armStall("attach", ms: 300) }
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            try m.ctlOK("vfio", "detach", "4")
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            return try m.ctlOK("dump")
        }
        let plain = try MountedMachine.with { try steps($0, stall: false) }
        let stalled = try MountedMachine.with { try steps($0, stall: true) }
        #expect(stalled == plain)
    }
}
