import Foundation
import Glibc
import Testing

/// The kernel caches listings and link targets (no OPENDIR, cached
/// symlinks); every change must still be visible to the next reader. Each
/// check lists or reads once *before* the change, so that what is checked
/// after it is the invalidation of a cached copy, and repeats the cycle with
/// no sleep in between.
@Suite("Kernel caching") struct KernelCacheTests {
    typealias D = DefaultPCI

    @Test("cached listings follow unbind, bind and driver changes at once")
    func listingsFollowBinds() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            for round in 0..<10 {
                #expect(pci.bound(to: "nvme") == [D.nvme], "round \(round)")
                #expect(Syscall.list(pci.device(D.nvme)).contains("driver"))
                #expect(Syscall.readlink(pci.device(D.nvme, "driver")) == "../../../../bus/pci/drivers/nvme")
                #expect(Syscall.write(m.path("bus/pci/drivers/nvme/unbind"), D.nvme) == .ok(12))
                #expect(pci.bound(to: "nvme").isEmpty, "round \(round)")
                #expect(!Syscall.list(pci.device(D.nvme)).contains("driver"), "round \(round)")
                #expect(Syscall.readlink(pci.device(D.nvme, "driver")) == nil, "round \(round)")
                #expect(Syscall.write(m.path("bus/pci/drivers/nvme/bind"), D.nvme) == .ok(12))
            }
        }
    }

    @Test("cached group listings and links follow a hot-unplug and a rescan at once")
    func listingsFollowHotplug() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            for round in 0..<5 {
                #expect(pci.groupIDs() == Array(0...7), "round \(round)")
                #expect(pci.members(5) == ["0000:00:1d.0", D.untrustedNIC])
                #expect(Syscall.readlink(m.path("kernel/iommu_groups/5/devices/\(D.untrustedNIC)"))
                        == "../../../../devices/pci0000:00/0000:00:1d.0/\(D.untrustedNIC)")
                #expect(pci.devices().contains(D.untrustedNIC))
                #expect(Syscall.write(pci.device("0000:00:1d.0", "remove"), "1") == .ok(1))
                #expect(pci.groupIDs() == [0, 1, 2, 3, 4, 6, 7], "round \(round)")
                #expect(!pci.devices().contains(D.untrustedNIC), "round \(round)")
                #expect(Syscall.readlink(m.path("kernel/iommu_groups/5/devices/\(D.untrustedNIC)")) == nil)
                #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            }
        }
    }

    @Test("a type change is read back at once by every reader")
    func typeChanges() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let held = try #require(OpenFile(pci.type(4), O_RDONLY))
            for (word, shown) in [("identity", "identity"), ("DMA", "DMA"), ("DMA-FQ", "DMA-FQ"), ("auto", "DMA-FQ")] {
                #expect(Syscall.write(pci.type(4), word) == .ok(word.utf8.count))
                #expect(pci.typeText(4) == shown)
                #expect(held.read() == .success(shown + "\n"))
            }
        }
    }
}
