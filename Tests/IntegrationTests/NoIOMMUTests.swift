import Foundation
import Glibc
import Testing
import Topology

/// A machine without IOMMU translation: the oracle's q35 booted with
/// `intel_iommu=off` (no unit registers, `intel_iommu_init`), and VFIO's
/// no-IOMMU mode on it (drivers/vfio/group.c `vfio_group_find_or_alloc`,
/// `vfio_noiommu_group_alloc`; vfio_main.c's `enable_unsafe_noiommu_mode`).
@Suite("No IOMMU") struct NoIOMMUTests {
    static let machine = Topology.qemuQ35VTdJSON.replacingOccurrences(of: "intel_iommu=on", with: "intel_iommu=off")
    static let nic = "0000:01:00.0"

    @Test("intel_iommu=off: no groups, no iommu links, no IOMMU class devices; drivers bind as usual")
    func noTranslation() throws {
        #expect(Self.machine != Topology.qemuQ35VTdJSON)
        try withTopology(Self.machine) { m in
            let pci = SysfsPCI(m)
            #expect(pci.groupIDs().isEmpty)
            #expect(Syscall.list(m.path("class/iommu")).isEmpty)
            for device in pci.devices() {
                #expect(Syscall.readlink(pci.device(device, "iommu_group")) == nil, "\(device)")
                #expect(Syscall.readlink(pci.device(device, "iommu")) == nil, "\(device)")
            }
            #expect(pci.driver(of: Self.nic) == "e1000e")
            #expect(Syscall.write(pci.driverKnob("e1000e", "unbind"), Self.nic) == .ok(12))
            #expect(Syscall.write(pci.driverKnob("e1000e", "bind"), Self.nic) == .ok(12))
            expectConsistentTree(m)
        }
    }

    @Test("vfio-pci refuses a device without a group until enable_unsafe_noiommu_mode is Y; then a vfio-noiommu group, gone with the unbind")
    func noIOMMUMode() throws {
        try withTopology(Self.machine) { m in
            let pci = SysfsPCI(m)
            let mode = m.path("module/vfio/parameters/enable_unsafe_noiommu_mode")
            #expect(Syscall.lstat(mode).map { $0.st_mode } == S_IFREG | 0o644)
            #expect(Syscall.text(mode) == "N\n")
            #expect(Syscall.write(pci.driverKnob("e1000e", "unbind"), Self.nic) == .ok(12))
            #expect(Syscall.write(pci.device(Self.nic, "driver_override"), "vfio-pci") == .ok(8))
            #expect(Syscall.write(pci.driverKnob("vfio-pci", "bind"), Self.nic) == .failed(EINVAL))
            #expect(pci.driver(of: Self.nic) == nil)
            #expect(Syscall.write(mode, "maybe") == .failed(EINVAL))
            #expect(Syscall.write(mode, "1") == .ok(1))
            #expect(Syscall.text(mode) == "Y\n")
            #expect(try m.ctlOK("vfio", "open-container", "c0").isEmpty)
            #expect(try m.ctlOK("vfio", "check-extension", "c0", "noiommu") == "1\n")
            #expect(Syscall.write(pci.driverKnob("vfio-pci", "bind"), Self.nic) == .ok(12))
            #expect(pci.groupIDs() == [0])
            #expect(Syscall.readlink(pci.device(Self.nic, "iommu_group")) == "../../../../kernel/iommu_groups/0")
            #expect(Syscall.text(m.path("kernel/iommu_groups/0/name")) == "vfio-noiommu\n")
            #expect(pci.typeText(0) == "unknown")
            #expect(pci.members(0) == [Self.nic])
            let dmesg = try m.ctlOK("dmesg")
            for line in ["vfio-pci 0000:01:00.0: probe with driver vfio-pci failed with error -22",
                         "vfio-pci 0000:01:00.0: Adding to iommu group 0",
                         "vfio-pci 0000:01:00.0: Adding kernel taint for vfio-noiommu group on device"] {
                #expect(dmesg.contains("] " + line + "\n"), "\(line)")
            }
            expectConsistentTree(m)
            try expectDumpRoundTrip(m)
            #expect(Syscall.write(pci.driverKnob("vfio-pci", "unbind"), Self.nic) == .ok(12))
            #expect(pci.groupIDs().isEmpty)
            #expect(Syscall.readlink(pci.device(Self.nic, "iommu_group")) == nil)
            #expect(try m.ctlOK("dmesg").contains("] vfio-pci 0000:01:00.0: Removing from iommu group 0\n"))
        }
    }
}
