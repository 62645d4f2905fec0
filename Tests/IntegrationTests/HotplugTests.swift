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

/// `/sys/class/pci_bus`, per-bus rescan and acpiphp slots on the oracle's
/// alt machine (switch behind RA1, slots `0`, `0-2`, `0-3` on buses 03,
/// 04 and 07).
@Suite("Hot-plug buses and slots") struct BusAndSlotTests {
    static let arguments = ["--machine", "qemu-q35-alt", "--profile", "linux-6.12"]
    static let allBuses = (0...9).map { "0000:0\($0)" }

    private func buses(_ m: MountedMachine) -> [String] { Syscall.list(m.path("class/pci_bus")).sorted() }
    private func slots(_ m: MountedMachine) -> [String] { Syscall.list(m.path("bus/pci/slots")).sorted() }
    private func present(_ m: MountedMachine, _ device: String) -> Bool {
        Syscall.lstat(m.path("bus/pci/devices/\(device)")) != nil
    }

    @Test("every bus has a class device under its bridge, with the kernel's files, modes and links")
    func busDirectories() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            #expect(buses(m) == Self.allBuses)
            #expect(Syscall.readlink(m.path("class/pci_bus/0000:00")) == "../../devices/pci0000:00/pci_bus/0000:00")
            #expect(Syscall.readlink(m.path("class/pci_bus/0000:03"))
                    == "../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/pci_bus/0000:03")
            let bus = m.path("class/pci_bus/0000:07/")
            #expect(Syscall.list(bus).sorted() == ["cpuaffinity", "cpulistaffinity", "device", "power", "rescan", "subsystem", "uevent"])
            #expect(Syscall.lstat(bus + "rescan").map { $0.st_mode & 0o7777 } == 0o200)
            #expect(Syscall.lstat(bus + "cpuaffinity").map { $0.st_mode & 0o7777 } == 0o444)
            #expect(Syscall.lstat(bus + "uevent").map { $0.st_mode & 0o7777 } == 0o644)
            #expect(Syscall.readlink(bus + "device") == "../../../0000:00:04.0")
            #expect(Syscall.readlink(m.path("devices/pci0000:00/pci_bus/0000:00/device")) == "../../../pci0000:00")
            #expect(Syscall.readlink(bus + "subsystem") == "../../../../../class/pci_bus")
            #expect(Syscall.openOutcome(bus + "rescan", O_RDONLY) == .failed(EACCES))
            #expect(Syscall.write(bus + "rescan", "x") == .failed(EINVAL))
            #expect(Syscall.text(bus + "uevent") == "")
        }
    }

    @Test("a bus's rescan re-adds only what is on that bus and below; a removed bridge's buses come back with it")
    func perBusRescan() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            #expect(Syscall.write(m.path("bus/pci/devices/0000:08:00.0/remove"), "1") == .ok(1))
            #expect(Syscall.write(m.path("bus/pci/devices/0000:09:00.0/remove"), "1") == .ok(1))
            #expect(Syscall.write(m.path("class/pci_bus/0000:09/rescan"), "1") == .ok(1))
            #expect(present(m, "0000:09:00.0"))
            #expect(!present(m, "0000:08:00.0"))
            // The lowest free id, as in the oracle's case d.
            #expect(Syscall.readlink(m.path("bus/pci/devices/0000:09:00.0/iommu_group"))?.hasSuffix("/14") == true)

            #expect(Syscall.write(m.path("bus/pci/devices/0000:01:00.0/remove"), "1") == .ok(1))
            #expect(buses(m) == ["0000:00", "0000:01", "0000:05", "0000:06", "0000:07", "0000:08", "0000:09"])
            #expect(slots(m) == ["0-3"])
            #expect(Syscall.write(m.path("class/pci_bus/0000:01/rescan"), "1") == .ok(1))
            #expect(buses(m) == Self.allBuses)
            #expect(slots(m) == ["0", "0-2", "0-3"])
            #expect(present(m, "0000:04:00.0"))
            #expect(!present(m, "0000:08:00.0"))
            let log = run(MountedMachine.binary, ["ctl", "--mount", m.root, "dmesg"]).stdout
            #expect(log.contains("acpiphp: Slot [0] unregistered\n"))
            #expect(log.contains("acpiphp: Slot [0-2] registered\n"))
        }
    }

    @Test("slot files: modes, address, power/adapter/latch, attention without an LED driver")
    func slotFiles() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            #expect(slots(m) == ["0", "0-2", "0-3"])
            let slot = m.path("bus/pci/slots/0-3/")
            #expect(Syscall.list(slot).sorted() == ["adapter", "address", "attention", "cur_bus_speed", "latch", "max_bus_speed", "power"])
            for (file, mode) in [("power", 0o644), ("attention", 0o644), ("address", 0o444), ("latch", 0o444), ("adapter", 0o444)] {
                #expect(Syscall.lstat(slot + file).map { Int($0.st_mode & 0o7777) } == mode, "\(file)")
            }
            #expect(Syscall.text(slot + "address") == "0000:07:00\n")
            #expect(Syscall.text(slot + "power") == "1\n")
            #expect(Syscall.text(slot + "adapter") == "1\n")
            #expect(Syscall.text(slot + "latch") == "0\n")
            #expect(Syscall.read(slot + "attention") == .failure(Errno(EINVAL)))
            #expect(Syscall.write(slot + "attention", "1") == .failed(ENODEV))
        }
    }

    @Test("power: 2 is EINVAL; x (read as 0) ejects the card with its group; 1 finds nothing; rescans do not bring it back")
    func slotPower() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            let power = m.path("bus/pci/slots/0-3/power")
            #expect(Syscall.write(power, "2") == .failed(EINVAL))
            #expect(Syscall.write(power, "257") == .ok(3))  // & 0xff: 1, already enabled
            #expect(present(m, "0000:07:00.0"))
            #expect(Syscall.write(power, "x") == .ok(1))
            #expect(!present(m, "0000:07:00.0"))
            #expect(Syscall.lstat(m.path("kernel/iommu_groups/13")) == nil)
            #expect(Syscall.text(power) == "0\n")
            #expect(Syscall.text(m.path("bus/pci/slots/0-3/adapter")) == "0\n")
            #expect(Syscall.text(m.path("bus/pci/slots/0-3/latch")) == "1\n")
            #expect(Syscall.write(power, "0") == .ok(1))
            #expect(Syscall.write(power, "1") == .ok(1))
            #expect(Syscall.text(power) == "0\n")
            #expect(Syscall.write(m.path("bus/pci/rescan"), "1") == .ok(1))
            #expect(!present(m, "0000:07:00.0"))
            #expect(slots(m) == ["0", "0-2", "0-3"])
        }
    }

    @Test("dmar0's domains_used follows groups: a removed group and an identity group hold no domain id")
    func domainsUsed() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            let used = m.path("devices/virtual/iommu/dmar0/intel-iommu/domains_used")
            #expect(Syscall.text(used) == "18\n")
            #expect(Syscall.write(m.path("bus/pci/devices/0000:07:00.0/remove"), "1") == .ok(1))
            #expect(Syscall.text(used) == "17\n")
            #expect(Syscall.write(m.path("kernel/iommu_groups/15/type"), "identity") == .ok(8))
            #expect(Syscall.text(used) == "16\n")
            #expect(Syscall.write(m.path("bus/pci/rescan"), "1") == .ok(1))
            #expect(Syscall.text(used) == "17\n")
            #expect(Syscall.write(m.path("kernel/iommu_groups/15/type"), "DMA") == .ok(3))
            #expect(Syscall.text(used) == "18\n")
        }
    }

    @Test("a bus reset of the device in the hot-plug root port's slot is ENOTTY; its other method still resets")
    func slotBusReset() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            let dev = m.path("bus/pci/devices/0000:07:00.0/")
            #expect(Syscall.write(dev + "reset", "1") == .ok(1))
            #expect(Syscall.write(dev + "reset_method", "bus") == .ok(3))
            #expect(Syscall.write(dev + "reset", "1") == .failed(ENOTTY))
            let log = run(MountedMachine.binary, ["ctl", "--mount", m.root, "dmesg"]).stdout
            #expect(log.contains("pcieport 0000:00:04.0: Data Link Layer Link Active not set in 100 msec\n"))
            // Behind the switch's downstream ports (no link reporting) a bus reset works.
            let nvme = m.path("bus/pci/devices/0000:03:00.0/")
            #expect(Syscall.write(nvme + "reset_method", "bus") == .ok(3))
            #expect(Syscall.write(nvme + "reset", "1") == .ok(1))
        }
    }

    @Test("a bridge reset clears the BARs behind it: the rescan reads 0, assigns the window's first place and programs the port")
    func barsAfterBridgeReset() throws {
        try MountedMachine.with(arguments: Self.arguments) { m in
            let nvme = m.path("bus/pci/devices/0000:04:00.0/")
            #expect(Syscall.text(nvme + "resource")?.hasPrefix("0x00000000fce00000 0x00000000fce03fff 0x0000000000140204\n") == true)
            #expect(Syscall.write(m.path("bus/pci/drivers/nvme/unbind"), "0000:04:00.0") == .ok(12))
            #expect(Syscall.write(m.path("bus/pci/devices/0000:02:01.0/reset"), "1") == .ok(1))
            // The kernel's resource stays; the hardware's register is gone.
            #expect(Syscall.text(nvme + "resource")?.hasPrefix("0x00000000fce00000 ") == true)
            #expect(Syscall.bytes(nvme + "config").map { Array($0[0x10..<0x18]) } == [0x04, 0, 0, 0, 0, 0, 0, 0])
            _ = run(MountedMachine.binary, ["ctl", "--mount", m.root, "dmesg", "--clear"])
            #expect(Syscall.write(nvme + "remove", "1") == .ok(1))
            #expect(Syscall.write(m.path("class/pci_bus/0000:04/rescan"), "1") == .ok(1))
            let log = run(MountedMachine.binary, ["ctl", "--mount", m.root, "dmesg"]).stdout
            let lines = log.split(separator: "\n").map { $0.split(separator: "] ", maxSplits: 1).last.map(String.init) ?? "" }
            #expect(lines.filter { $0.contains("BAR") || $0.contains("bridge") } == [
                "pci 0000:04:00.0: BAR 0 [mem 0x00000000-0x00003fff 64bit]",
                "pci 0000:04:00.0: BAR 0 [mem 0xfce00000-0xfce03fff 64bit]: assigned",
                "pcieport 0000:02:01.0: PCI bridge to [bus 04]",
                "pcieport 0000:02:01.0:   bridge window [mem 0xfce00000-0xfcffffff]",
                "pcieport 0000:02:01.0:   bridge window [mem 0xfde00000-0xfdffffff 64bit pref]",
            ], "\(log)")
            #expect(Syscall.bytes(nvme + "config").map { Array($0[0x10..<0x14]) } == [0x04, 0x00, 0xe0, 0xfc])
        }
    }
}
