import Foundation
import Glibc
import Testing

/// `remove` and `rescan` through the mount (kernel-behaviour §6 and the
/// oracle's remove section): devices and groups go and come back, group ids
/// are the lowest free ones, descriptors opened before a removal get ENODEV.
/// Every listing is taken right after the write, with no sleep: sysfs
/// changes are visible to the next reader.
@Suite("Hot-plug") struct HotplugTests {
    typealias D = DefaultPCI

    @Test("removing one member: the device goes, its group stays and still works; rescan rebinds it")
    func removeMember() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let type3 = try #require(OpenFile(pci.type(3), O_RDWR))
            #expect(Syscall.write(pci.device(D.nvme, "remove"), "1") == .ok(1))
            #expect(!pci.devices().contains(D.nvme))
            #expect(!Syscall.list(m.path("devices/pci0000:00/0000:00:1c.0")).contains(D.nvme))
            #expect(pci.members(3) == ["0000:00:1c.0"])
            #expect(pci.bound(to: "nvme").isEmpty)
            #expect(pci.groupIDs() == Array(0...7))
            // The fd on the surviving group works; pcieport does not use the DMA API.
            #expect(type3.read() == .success("DMA-FQ\n"))
            #expect(type3.write("identity") == .ok(8))
            #expect(pci.typeText(3) == "identity")

            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.devices() == D.bootDevices)
            #expect(pci.members(3) == ["0000:00:1c.0", D.nvme])
            #expect(pci.bound(to: "nvme") == [D.nvme])
            #expect(Syscall.readlink(pci.device(D.nvme, "iommu_group")) == "../../../../kernel/iommu_groups/3")
            #expect(Syscall.readlink(pci.device(D.nvme, "driver")) == "../../../../bus/pci/drivers/nvme")
            // It joined the group's current domain, and nvme uses it again.
            #expect(type3.read() == .success("identity\n"))
            #expect(type3.write("DMA") == .failed(EPERM))
            expectConsistentTree(m)
        }
    }

    @Test("removing a group's last member removes the group; its fds get ENODEV, also after a rescan re-creates it")
    func removeLastMember() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let type5 = try #require(OpenFile(pci.type(5), O_RDWR))
            #expect(Syscall.write(pci.device(D.untrustedNIC, "remove"), "1") == .ok(1))
            #expect(pci.groupIDs() == Array(0...7))
            #expect(pci.members(5) == ["0000:00:1d.0"])
            #expect(type5.read() == .success("DMA\n"))
            #expect(type5.write("DMA") == .ok(3))

            #expect(Syscall.write(pci.device("0000:00:1d.0", "remove"), "1") == .ok(1))
            #expect(pci.groupIDs() == [0, 1, 2, 3, 4, 6, 7])
            #expect(pci.devices() == D.bootDevices.subtracting(["0000:00:1d.0", D.untrustedNIC]))
            #expect(!Syscall.list(m.path("devices/pci0000:00")).contains("0000:00:1d.0"))
            #expect(!Syscall.list(m.path("devices/virtual/iommu/dmar0/devices")).contains("0000:00:1d.0"))
            #expect(type5.read() == .failure(Errno(ENODEV)))
            #expect(type5.write("DMA") == .failed(ENODEV))
            #expect(Syscall.openOutcome(pci.type(5), O_RDONLY) == .failed(ENOENT))

            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.groupIDs() == Array(0...7))
            #expect(pci.members(5) == ["0000:00:1d.0", D.untrustedNIC])
            #expect(pci.devices() == D.bootDevices)
            #expect(pci.bound(to: "pcieport").contains("0000:00:1d.0"))
            // The old descriptor stays dead; the new directory answers.
            #expect(type5.read() == .failure(Errno(ENODEV)))
            #expect(type5.write("DMA") == .failed(ENODEV))
            #expect(Syscall.text(pci.type(5)) != nil)
            // The untrusted NIC is back in the group: identity is refused again.
            #expect(Syscall.write(pci.type(5), "identity") == .failed(EINVAL))
            expectConsistentTree(m)
        }
    }

    @Test("removing a bridge takes everything behind it; rescan brings it all back in one group with its drivers")
    func removeBridge() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let behind = [D.pciBridge, D.rtl8139, D.usbOHCI]
            // A type set before the removal dies with the group.
            #expect(Syscall.write(pci.driverKnob("8139too", "unbind"), D.rtl8139) == .ok(12))
            #expect(Syscall.write(pci.type(6), "identity") == .ok(8))
            #expect(Syscall.write(pci.device(D.pciBridge, "remove"), "1\n") == .ok(2))
            #expect(pci.devices() == D.bootDevices.subtracting(behind))
            #expect(pci.groupIDs() == [0, 1, 2, 3, 4, 5, 7])
            #expect(pci.bound(to: "8139too").isEmpty)
            #expect(!Syscall.list(m.path("devices/pci0000:00")).contains(D.pciBridge))
            #expect(Set(Syscall.list(m.path("devices/virtual/iommu/dmar0/devices"))).isDisjoint(with: behind))

            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.devices() == D.bootDevices)
            #expect(pci.groupMap() == D.bootGroups)
            #expect(pci.bound(to: "8139too") == [D.rtl8139])
            #expect(Set(Syscall.list(m.path("devices/pci0000:00/0000:00:1e.0"))).isSuperset(of: [D.rtl8139, D.usbOHCI]))
            // A new group: the boot default type, and 8139too uses it.
            #expect(pci.typeText(6) == "DMA-FQ")
            #expect(Syscall.write(pci.type(6), "identity") == .failed(EPERM))
            expectConsistentTree(m)
        }
    }

    @Test("a device's rescan (0200) rescans only the bus the device is on and the buses behind it")
    func rescanBusOfDevice() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.lstat(pci.device(D.usbOHCI, "rescan")).map { $0.st_mode & 0o7777 } == 0o200)
            #expect(Syscall.write(pci.device(D.nvme, "remove"), "1") == .ok(1))
            #expect(Syscall.write(pci.device(D.rtl8139, "remove"), "1") == .ok(1))
            #expect(Syscall.write(pci.device(D.usbOHCI, "rescan"), "x") == .failed(EINVAL))
            #expect(Syscall.write(pci.device(D.usbOHCI, "rescan"), "0") == .ok(1))
            #expect(pci.devices() == D.bootDevices.subtracting([D.nvme, D.rtl8139]))
            // The OHCI controller is on the bridge's bus: only that bus is scanned.
            #expect(Syscall.write(pci.device(D.usbOHCI, "rescan"), "1") == .ok(1))
            #expect(pci.devices() == D.bootDevices.subtracting([D.nvme]))
            #expect(pci.bound(to: "8139too") == [D.rtl8139])
            // A root port is on the root bus: everything behind it comes back.
            #expect(Syscall.write(pci.device("0000:00:1c.4", "rescan"), "1\n") == .ok(2))
            #expect(pci.devices() == D.bootDevices)
            #expect(pci.groupMap() == D.bootGroups)
            expectConsistentTree(m)
        }
    }

    @Test("remove and rescan parse like kstrtoul; descriptors of a removed device get ENODEV")
    func knobErrnos() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let vendor = try #require(OpenFile(pci.device(D.usbOHCI, "vendor"), O_RDONLY))
            let remove = try #require(OpenFile(pci.device(D.usbOHCI, "remove"), O_WRONLY))
            #expect(Syscall.write(pci.device(D.usbOHCI, "remove"), "0") == .ok(1))
            #expect(Syscall.write(pci.device(D.usbOHCI, "remove"), "x") == .failed(EINVAL))
            #expect(Syscall.write(pci.device(D.usbOHCI, "remove"), "") == .ok(0))
            #expect(pci.devices() == D.bootDevices)
            #expect(vendor.read() == .success("0x1033\n"))

            #expect(remove.write("1") == .ok(1))
            #expect(!pci.devices().contains(D.usbOHCI))
            #expect(pci.members(6) == [D.pciBridge, D.rtl8139])
            #expect(vendor.read() == .failure(Errno(ENODEV)))
            #expect(vendor.write("1") == .failed(EBADF))
            #expect(remove.write("1") == .failed(ENODEV))

            #expect(Syscall.write(pci.rescan, "0") == .ok(1))
            #expect(Syscall.write(pci.rescan, "x") == .failed(EINVAL))
            #expect(!pci.devices().contains(D.usbOHCI))
            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.members(6) == [D.pciBridge, D.rtl8139, D.usbOHCI])
            // Old descriptors stay dead after the device came back.
            #expect(vendor.read() == .failure(Errno(ENODEV)))
            #expect(remove.write("1") == .failed(ENODEV))
            #expect(pci.devices() == D.bootDevices)
        }
    }

    @Test("a rescan re-adds missing devices in probe order, each new group taking the lowest free id")
    func lowestFreeIDs() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            // Free ids 2 and 5; rescan finds 00:14.0 before 00:1d.0 on the root bus.
            #expect(Syscall.write(pci.device("0000:00:1d.0", "remove"), "1") == .ok(1))
            #expect(Syscall.write(pci.device("0000:00:14.0", "remove"), "1") == .ok(1))
            #expect(pci.groupIDs() == [0, 1, 3, 4, 6, 7])
            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.groupMap() == D.bootGroups)
            #expect(pci.bound(to: "xhci_hcd") == ["0000:00:14.0"])
        }
    }
}

// MARK: - Helpers

/// A descriptor kept open across changes to the tree (`sysw -F` in the oracle).
final class OpenFile {
    let fd: Int32

    init?(_ path: String, _ flags: Int32) {
        fd = open(path, flags)
        if fd < 0 { return nil }
    }

    deinit { close(fd) }

    /// One read(2) at offset 0.
    func read() -> Result<String, Errno> {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.pread(fd, &buffer, buffer.count, 0)
        return n < 0 ? .failure(Errno(errno)) : .success(String(decoding: buffer[0..<n], as: UTF8.self))
    }

    /// One write(2).
    func write(_ text: String) -> Syscall.Outcome {
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        return n < 0 ? .failed(errno) : .ok(n)
    }
}
