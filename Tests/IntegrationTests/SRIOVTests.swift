import Foundation
import Glibc
import Testing

/// SR-IOV on the default machine's NIC (03:00.0: 7 VFs, offset 128, stride 4,
/// VF device 1520, VF driver igbvf), with the errnos of the oracle's sriov
/// section: each VF is a new device in a new group with the lowest free id.
@Suite("SR-IOV") struct SRIOVTests {
    typealias D = DefaultPCI
    /// The first four VFs' addresses: routing id 0x300 + 128 + 4·index.
    static let vfs = ["0000:03:10.0", "0000:03:10.4", "0000:03:11.0", "0000:03:11.4"]

    @Test("the PF's read-only SR-IOV attributes, and sriov_numvfs without a PF driver: ENOENT")
    func withoutDriver() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let expected = [("sriov_totalvfs", "7\n"), ("sriov_offset", "128\n"), ("sriov_stride", "4\n"),
                            ("sriov_vf_device", "1520\n"), ("sriov_numvfs", "0\n"), ("sriov_drivers_autoprobe", "1\n")]
            for (file, text) in expected {
                #expect(Syscall.text(pci.device(D.nic, file)) == text, "\(file)")
            }
            let numvfs = pci.device(D.nic, "sriov_numvfs")
            #expect(Syscall.write(numvfs, "2") == .failed(ENOENT))
            // Range and syntax are checked before the driver.
            #expect(Syscall.write(numvfs, "8") == .failed(ERANGE))
            #expect(Syscall.write(numvfs, "x") == .failed(EINVAL))
            // The current number is a no-op, driver or not.
            #expect(Syscall.write(numvfs, "0") == .ok(1))
            #expect(pci.groupIDs() == Array(0...7))
        }
    }

    @Test("4 VFs: new groups 8–11, virtfn/physfn links, igbvf bound; then N→M, range and syntax errors; 0 removes them")
    func enableAndDisable() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let numvfs = pci.device(D.nic, "sriov_numvfs")
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            for (bad, errno) in [("x", EINVAL), ("-1", EINVAL), (" 2", EINVAL), ("65536", EINVAL), ("8", ERANGE), ("0x10", ERANGE)] {
                #expect(Syscall.write(numvfs, bad) == .failed(errno), "\(bad.debugDescription)")
            }
            #expect(Syscall.write(numvfs, "0x0") == .ok(3))
            #expect(Syscall.write(numvfs, "4") == .ok(1))
            #expect(Syscall.text(numvfs) == "4\n")

            #expect(pci.groupIDs() == Array(0...11))
            for (index, vf) in Self.vfs.enumerated() {
                #expect(pci.members(8 + index) == [vf])
                #expect(pci.devices().contains(vf))
                #expect(Syscall.readlink(pci.device(D.nic, "virtfn\(index)")) == "../" + vf)
                #expect(Syscall.readlink(pci.device(vf, "physfn")) == "../" + D.nic)
                #expect(Syscall.readlink(pci.device(vf, "iommu_group")) == "../../../../kernel/iommu_groups/\(8 + index)")
                #expect(Syscall.readlink(m.path("kernel/iommu_groups/\(8 + index)/devices/\(vf)"))
                        == "../../../../devices/pci0000:00/0000:00:1c.4/\(vf)")
                #expect(Syscall.text(pci.device(vf, "device")) == "0x1520\n")
                // VFs have no remove and no SR-IOV capability of their own.
                #expect(Syscall.lstat(pci.device(vf, "remove")) == nil)
                #expect(Syscall.lstat(pci.device(vf, "sriov_numvfs")) == nil)
            }
            #expect(pci.bound(to: "igbvf") == Set(Self.vfs))
            #expect(Syscall.readlink(pci.device(Self.vfs[0], "driver")) == "../../../../bus/pci/drivers/igbvf")
            #expect(Set(Syscall.list(pci.device(D.nic)).filter { $0.hasPrefix("virtfn") }) == ["virtfn0", "virtfn1", "virtfn2", "virtfn3"])
            // igbvf uses the DMA API: the VF's group is in use.
            #expect(pci.typeText(8) == "DMA-FQ")
            #expect(Syscall.write(pci.type(8), "identity") == .failed(EPERM))

            #expect(Syscall.write(numvfs, "5") == .failed(EBUSY))
            #expect(Syscall.write(numvfs, "4") == .ok(1))
            #expect(Syscall.write(numvfs, "0x4") == .ok(3))
            #expect(Syscall.write(numvfs, "8") == .failed(ERANGE))
            #expect(Syscall.write(numvfs, "x") == .failed(EINVAL))
            #expect(pci.groupIDs() == Array(0...11))

            let vfType = try #require(OpenFile(pci.type(8), O_RDWR))
            #expect(Syscall.write(numvfs, "0") == .ok(1))
            #expect(Syscall.text(numvfs) == "0\n")
            #expect(pci.groupIDs() == Array(0...7))
            #expect(pci.devices() == D.bootDevices)
            #expect(pci.bound(to: "igbvf").isEmpty)
            #expect(Syscall.list(pci.device(D.nic)).filter { $0.hasPrefix("virtfn") } == [])
            #expect(vfType.read() == .failure(Errno(ENODEV)))
            #expect(vfType.write("DMA") == .failed(ENODEV))
            expectConsistentTree(m)
        }
    }

    @Test("sriov_drivers_autoprobe parses like kstrtobool; with 0 the VFs stay unbound")
    func autoprobe() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let autoprobe = pci.device(D.nic, "sriov_drivers_autoprobe")
            #expect(Syscall.write(autoprobe, "2") == .failed(EINVAL))
            #expect(Syscall.write(autoprobe, "x") == .failed(EINVAL))
            #expect(Syscall.write(autoprobe, "yes") == .ok(3))
            #expect(Syscall.text(autoprobe) == "1\n")
            #expect(Syscall.write(autoprobe, "0") == .ok(1))
            #expect(Syscall.text(autoprobe) == "0\n")

            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            #expect(Syscall.write(pci.device(D.nic, "sriov_numvfs"), "2") == .ok(1))
            #expect(pci.groupIDs() == Array(0...9))
            #expect(pci.bound(to: "igbvf").isEmpty)
            for vf in Self.vfs.prefix(2) {
                #expect(!Syscall.list(pci.device(vf)).contains("driver"), "\(vf) is bound")
            }
            // Unbound, the VF's group may change type.
            #expect(Syscall.write(pci.type(8), "identity") == .ok(8))
            // drivers_probe binds igbvf by hand.
            #expect(Syscall.write(pci.driversProbe, Self.vfs[1]) == .ok(12))
            #expect(pci.bound(to: "igbvf") == [Self.vfs[1]])
            #expect(Syscall.write(pci.device(D.nic, "sriov_numvfs"), "0") == .ok(1))
            #expect(pci.groupIDs() == Array(0...7))
        }
    }

    @Test("with the PF unbound the VFs stay; only the current number is accepted (ENOENT otherwise)")
    func pfUnboundWithVFs() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let numvfs = pci.device(D.nic, "sriov_numvfs")
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            #expect(Syscall.write(numvfs, "2") == .ok(1))
            #expect(Syscall.write(pci.driverKnob("igb", "unbind"), D.nic) == .ok(12))
            #expect(pci.groupIDs() == Array(0...9))
            for count in ["0", "1", "3"] {
                #expect(Syscall.write(numvfs, count) == .failed(ENOENT), "\(count)")
            }
            #expect(Syscall.write(numvfs, "2") == .ok(1))
            #expect(pci.bound(to: "igbvf") == Set(Self.vfs.prefix(2)))
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            #expect(Syscall.write(numvfs, "0") == .ok(1))
            #expect(pci.groupIDs() == Array(0...7))
        }
    }

    @Test("a VF takes the lowest free id; the device a rescan brings back takes the next")
    func lowestFreeID() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.device("0000:00:14.0", "remove"), "1") == .ok(1))
            #expect(pci.groupIDs() == [0, 1, 3, 4, 5, 6, 7])
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            #expect(Syscall.write(pci.device(D.nic, "sriov_numvfs"), "1") == .ok(1))
            #expect(pci.members(2) == [Self.vfs[0]])
            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.members(8) == ["0000:00:14.0"])
            #expect(Syscall.readlink(pci.device("0000:00:14.0", "iommu_group")) == "../../../kernel/iommu_groups/8")
            expectConsistentTree(m)
        }
    }
}
