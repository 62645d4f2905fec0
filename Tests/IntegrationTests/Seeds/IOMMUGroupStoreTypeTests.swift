import Foundation
import Glibc
import Testing

/// Seed 4, `iommu_group_store_type` for a normal (multi-device) group: from
/// v6.4 the store checks DMA ownership (`owner_cnt`) instead of taking one
/// device's `device_lock`, so a group of several devices can change type
/// once no member has a driver that uses the DMA API, and an attach that
/// fails on one member rolls the others back. linux-6.1 (singleton rule)
/// refuses any group of more than one device.
///
/// Group 6 of the default machine: a PCI bridge, an RTL8139 bound to
/// 8139too, and an unbound USB controller.
@Suite("Seed: iommu_group_store_type changes a normal group through DMA ownership")
struct IOMMUGroupStoreTypeTests {
    typealias D = DefaultPCI
    static let requests = ["DMA", "DMA-FQ", "identity", "auto"]

    @Test("one member bound: every type request → EPERM; all unbound: each succeeds", arguments: ["linux-7.1", "linux-6.4"])
    func ownershipRule(profile: String) throws {
        try MountedMachine.with(arguments: ["--profile", profile]) { m in
            let pci = SysfsPCI(m)
            #expect(pci.members(6).count == 3)
            for type in Self.requests {
                #expect(Syscall.write(pci.type(6), type) == .failed(EPERM), "\(type)")
            }
            #expect(pci.typeText(6) == "DMA-FQ")
            #expect(Syscall.write(pci.driverKnob("8139too", "unbind"), D.rtl8139) == .ok(12))
            for (type, reads) in [("identity", "identity"), ("DMA", "DMA"), ("DMA-FQ", "DMA-FQ"), ("identity", "identity"), ("auto", "DMA-FQ")] {
                #expect(Syscall.write(pci.type(6), type) == .ok(type.utf8.count), "\(type)")
                #expect(pci.typeText(6) == reads)
            }
            // The driver binds again on the group's new domain.
            #expect(Syscall.write(pci.driverKnob("8139too", "bind"), D.rtl8139) == .ok(12))
        }
    }

    @Test("an attach failure on the second member rolls the first back: the write fails, the type is unchanged")
    func rollback() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.driverKnob("8139too", "unbind"), D.rtl8139) == .ok(12))
            try m.ctlOK("inject", "attach", "EIO", "--once", "--skip", "1")
            #expect(Syscall.write(pci.type(6), "identity") == .failed(EIO))
            #expect(pci.typeText(6) == "DMA-FQ")
            #expect(try m.ctlOK("inject", "--list") == "")
            // Nothing was left half-moved: the same write now succeeds.
            #expect(Syscall.write(pci.type(6), "identity") == .ok(8))
            #expect(pci.typeText(6) == "identity")
            expectConsistentTree(m)
        }
    }

    @Test("a stall inside the change holds the group's mutex: a driver bind of a member waits, then gets the new domain")
    func bindWaitsForTheChange() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.driverKnob("8139too", "unbind"), D.rtl8139) == .ok(12))
            let (write, bind) = try m.expectWaiting(at: "attach", while: { Syscall.write(pci.type(6), "identity") }) {
                Syscall.write(pci.driverKnob("8139too", "bind"), D.rtl8139)
            }
            #expect(write.wait() == .ok(8))
            #expect(bind.wait() == .ok(12))
            #expect(pci.typeText(6) == "identity")
            #expect(Syscall.write(pci.type(6), "DMA") == .failed(EPERM))
        }
    }

    @Test("linux-6.1: a group of more than one device cannot change type, bound or not (EINVAL)")
    func singletonRuleOn61() throws {
        try MountedMachine.with(arguments: ["--profile", "linux-6.1"]) { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.driverKnob("8139too", "unbind"), D.rtl8139) == .ok(12))
            for type in Self.requests {
                #expect(Syscall.write(pci.type(6), type) == .failed(EINVAL), "\(type)")
            }
            let dmesg = try m.ctlOK("dmesg")
            #expect(dmesg.contains("Cannot change default domain: Group has more than one device"))
        }
    }
}
