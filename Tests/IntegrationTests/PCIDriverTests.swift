import Foundation
import Glibc
import Testing

/// The driver core's knobs (`bind`, `unbind`, `driver_override`,
/// `drivers_probe`) through the mount, and how binding decides who may
/// change a group's `type` (kernel-behaviour §5). Every errno is the one
/// the 6.12 "alt" oracle transcript printed for the same write
/// (Tests/IntegrationTests/Fixtures/oracle/6.12-default-alt-pci.txt, sections bind and override).
/// A bind refused (EBUSY) because a user owns the group needs VFIO's ioctls,
/// which the mount does not serve yet: ConcurrencyTests covers it on the core.
@Suite("PCI drivers") struct PCIDriverTests {
    typealias D = DefaultPCI

    @Test("a bound nvme blocks type changes; unbound, vfio-pci or overridden it does not")
    func ownershipInterplay() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let type = pci.type(3)
            let refused = bash("echo identity > \(type)")
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("write error: Operation not permitted"), "\(refused.stderr)")
            #expect(pci.typeText(3) == "DMA-FQ")

            // Unbind through the device's own `driver` link, as scripts do.
            #expect(Syscall.write(pci.device(D.nvme, "driver/unbind"), D.nvme) == .ok(12))
            #expect(!Syscall.list(pci.device(D.nvme)).contains("driver"))
            #expect(Syscall.readlink(pci.device(D.nvme, "driver")) == nil, "the driver link outlived the unbind")
            #expect(!pci.bound(to: "nvme").contains(D.nvme))
            #expect(Syscall.write(type, "identity") == .ok(8))
            #expect(pci.typeText(3) == "identity")

            // vfio-pci by driver_override + drivers_probe: it manages DMA itself.
            #expect(Syscall.write(pci.device(D.nvme, "driver_override"), "vfio-pci\n") == .ok(9))
            #expect(Syscall.text(pci.device(D.nvme, "driver_override")) == "vfio-pci\n")
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(Syscall.readlink(pci.device(D.nvme, "driver")) == "../../../../bus/pci/drivers/vfio-pci")
            #expect(pci.bound(to: "vfio-pci") == [D.nvme])
            for (word, shown) in [("DMA", "DMA"), ("DMA-FQ", "DMA-FQ"), ("identity", "identity"), ("auto", "DMA-FQ")] {
                #expect(Syscall.write(type, word) == .ok(word.utf8.count), "\(word) with vfio-pci bound")
                #expect(pci.typeText(3) == shown)
            }

            // Back to nvme: override cleared, vfio-pci unbound, the native driver probes.
            #expect(Syscall.write(pci.device(D.nvme, "driver_override"), "\n") == .ok(1))
            #expect(Syscall.write(pci.driverKnob("vfio-pci", "unbind"), D.nvme) == .ok(12))
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == "nvme")
            #expect(Syscall.write(type, "identity") == .failed(EPERM))
            // DMA-FQ over DMA-FQ is a domain change like any other...
            #expect(Syscall.write(type, "DMA-FQ") == .failed(EPERM))
            // ...but the live strict → lazy switch needs no ownership check.
            #expect(Syscall.write(pci.driverKnob("nvme", "unbind"), D.nvme) == .ok(12))
            #expect(Syscall.write(type, "DMA") == .ok(3))
            #expect(Syscall.write(pci.driverKnob("nvme", "bind"), D.nvme) == .ok(12))
            #expect(Syscall.write(type, "DMA") == .failed(EPERM))
            #expect(Syscall.write(type, "DMA-FQ") == .ok(6))
            #expect(pci.typeText(3) == "DMA-FQ")
        }
    }

    @Test("pci-stub (driver_managed_dma) bound by override leaves type writable")
    func pciStub() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.device(D.nvme, "driver/unbind"), D.nvme) == .ok(12))
            #expect(Syscall.write(pci.device(D.nvme, "driver_override"), "pci-stub") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == "pci-stub")
            for word in ["DMA", "DMA-FQ", "identity", "auto"] {
                #expect(Syscall.write(pci.type(3), word) == .ok(word.utf8.count), "\(word) with pci-stub bound")
            }
            #expect(Syscall.write(pci.type(3), "bogus") == .failed(EINVAL))
        }
    }

    @Test("bind: EBUSY when bound, ENODEV for anything that does not match")
    func bindErrnos() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let bind = { (driver: String) in pci.driverKnob(driver, "bind") }
            // Already bound to that driver, in every spelling.
            #expect(Syscall.write(bind("nvme"), D.nvme) == .failed(EBUSY))
            #expect(Syscall.write(bind("nvme"), D.nvme + "\n") == .failed(EBUSY))
            #expect(Syscall.write(bind("nvme"), Array((D.nvme + "\0junk").utf8)) == .failed(EBUSY))
            #expect(Syscall.write(bind("pcieport"), "0000:00:1c.0") == .failed(EBUSY))
            // Bound elsewhere and the ids do not match.
            #expect(Syscall.write(bind("igb"), D.nvme) == .failed(ENODEV))
            // No such device, garbage, no domain, a leading space.
            for name in ["0000:ff:1f.7", "garbage", "02:00.0", " " + D.nvme] {
                #expect(Syscall.write(bind("nvme"), name) == .failed(ENODEV), "bind \(name.debugDescription)")
            }
            #expect(Syscall.write(bind("nvme"), "") == .ok(0))
            // Unbound and nothing matches: no driver for 05:01.0; vfio-pci and
            // pci-stub have no ids.
            #expect(Syscall.write(bind("nvme"), D.usbOHCI) == .failed(ENODEV))
            #expect(Syscall.write(bind("vfio-pci"), D.nic) == .failed(ENODEV))
            #expect(Syscall.write(bind("pci-stub"), D.nic) == .failed(ENODEV))
            #expect(pci.driver(of: D.nic) == nil)
            // The NIC's id table is igb's.
            #expect(Syscall.write(bind("igb"), D.nic) == .ok(12))
            #expect(Syscall.readlink(pci.device(D.nic, "driver")) == "../../../../bus/pci/drivers/igb")
            #expect(pci.bound(to: "igb") == [D.nic])
            #expect(Syscall.write(bind("igb"), D.nic) == .failed(EBUSY))
        }
    }

    @Test("unbind: ENODEV unless the device is bound to that driver")
    func unbindErrnos() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let unbind = { (driver: String) in pci.driverKnob(driver, "unbind") }
            #expect(Syscall.write(unbind("igb"), D.nvme) == .failed(ENODEV))
            #expect(Syscall.write(unbind("nvme"), "garbage") == .failed(ENODEV))
            #expect(Syscall.write(unbind("nvme"), "0000:ff:1f.7") == .failed(ENODEV))
            #expect(Syscall.write(unbind("nvme"), "") == .ok(0))
            #expect(pci.driver(of: D.nvme) == "nvme")
            #expect(Syscall.write(unbind("nvme"), D.nvme + "\n") == .ok(13))
            #expect(pci.driver(of: D.nvme) == nil)
            #expect(pci.bound(to: "nvme").isEmpty)
            #expect(Syscall.write(unbind("nvme"), D.nvme) == .failed(ENODEV))
            // Unbound, the native driver binds again.
            #expect(Syscall.write(pci.driverKnob("nvme", "bind"), D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == "nvme")
        }
    }

    @Test("driver_override: stored up to a newline, cleared by an empty name, 4094 bytes at most")
    func overrideErrnos() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let override = pci.device(D.nvme, "driver_override")
            #expect(Syscall.text(override) == "(null)\n")
            // Set while bound: the bound driver stays.
            #expect(Syscall.write(override, "vfio-pci") == .ok(8))
            #expect(Syscall.text(override) == "vfio-pci\n")
            #expect(Syscall.write(pci.driverKnob("vfio-pci", "bind"), D.nvme) == .failed(EBUSY))
            #expect(Syscall.write(pci.driverKnob("nvme", "bind"), D.nvme) == .failed(ENODEV))
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == "nvme")

            let cases: [(bytes: [UInt8], result: Syscall.Outcome, shown: String)] = [
                (Array("vfio-pci\n".utf8), .ok(9), "vfio-pci\n"),
                ([], .ok(0), "vfio-pci\n"),
                (Array("\n".utf8), .ok(1), "(null)\n"),
                (Array("pci-stub".utf8), .ok(8), "pci-stub\n"),
                ([0], .ok(1), "(null)\n"),
                (Array("nvme\nfoo".utf8), .ok(8), "nvme\n"),
                (Array("\nfoo".utf8), .ok(4), "(null)\n"),
                (Array(" vfio-pci".utf8), .ok(9), " vfio-pci\n"),
                (Array(repeating: UInt8(ascii: "A"), count: 4094), .ok(4094), String(repeating: "A", count: 4094) + "\n"),
                (Array(repeating: UInt8(ascii: "A"), count: 4095), .failed(EINVAL), String(repeating: "A", count: 4094) + "\n"),
                (Array(repeating: UInt8(ascii: "A"), count: 5000), .failed(EINVAL), String(repeating: "A", count: 4094) + "\n"),
            ]
            for (bytes, result, shown) in cases {
                let label = bytes.count > 20 ? "\(bytes.count) bytes" : String(decoding: bytes, as: UTF8.self).debugDescription
                #expect(Syscall.write(override, bytes) == result, "\(label)")
                #expect(Syscall.text(override) == shown, "\(label)")
            }

            // An override naming no registered driver: the device stays unbound.
            #expect(Syscall.write(override, "no-such-driver") == .ok(14))
            #expect(Syscall.write(pci.driverKnob("nvme", "bind"), D.nvme) == .failed(ENODEV))
            #expect(Syscall.write(pci.driverKnob("nvme", "unbind"), D.nvme) == .ok(12))
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == nil)
            #expect(Syscall.write(pci.driverKnob("nvme", "bind"), D.nvme) == .failed(ENODEV))
            // The override names the driver: drivers_probe binds it.
            #expect(Syscall.write(override, "nvme") == .ok(4))
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == "nvme")
        }
    }

    @Test("drivers_probe: a no-op for bound devices and devices no driver matches; ENODEV for unknown names")
    func probeErrnos() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.driversProbe, D.nvme + "\n") == .ok(13))
            #expect(pci.driver(of: D.nvme) == "nvme")
            #expect(Syscall.write(pci.driversProbe, "garbage") == .failed(ENODEV))
            #expect(Syscall.write(pci.driversProbe, "0000:ff:1f.7") == .failed(ENODEV))
            #expect(Syscall.write(pci.driversProbe, "") == .ok(0))
            #expect(Syscall.write(pci.driversProbe, D.usbOHCI) == .ok(12))
            #expect(pci.driver(of: D.usbOHCI) == nil)
            // The unbound NIC: its native driver igb binds, and group 4 is then in use.
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.nic) == .ok(12))
            #expect(pci.driver(of: D.nic) == "igb")
            #expect(Syscall.write(pci.type(4), "DMA") == .failed(EPERM))
            #expect(pci.typeText(4) == "identity")
        }
    }

    @Test("a zero-length write to any knob returns 0 and changes nothing")
    func zeroLengthWrites() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let knobs = [
                pci.driverKnob("nvme", "bind"), pci.driverKnob("nvme", "unbind"), pci.driversProbe, pci.rescan,
                pci.device(D.nvme, "driver_override"), pci.device(D.nvme, "remove"), pci.device(D.nvme, "reset"),
                pci.device(D.nic, "sriov_numvfs"), pci.device(D.nic, "sriov_drivers_autoprobe"), pci.type(3),
            ]
            for knob in knobs {
                #expect(Syscall.write(knob, []) == .ok(0), "\(knob)")
            }
            #expect(pci.driver(of: D.nvme) == "nvme")
            #expect(pci.devices() == DefaultPCI.bootDevices)
            #expect(Syscall.text(pci.device(D.nvme, "driver_override")) == "(null)\n")
            #expect(Syscall.text(pci.device(D.nic, "sriov_numvfs")) == "0\n")
            #expect(Syscall.text(pci.device(D.nic, "sriov_drivers_autoprobe")) == "1\n")
        }
    }

    @Test("knob modes are sysfs': write-only knobs refuse reads even for root, others need root")
    func knobModes() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let modes: [(String, mode_t)] = [
                (pci.driversProbe, 0o200), (pci.rescan, 0o200),
                (pci.driverKnob("vfio-pci", "bind"), 0o200), (pci.driverKnob("igbvf", "unbind"), 0o200),
                (pci.device(D.nvme, "driver_override"), 0o644), (pci.device(D.nvme, "remove"), 0o220),
                (pci.device(D.nvme, "reset"), 0o200), (pci.device(D.nic, "sriov_numvfs"), 0o644),
                (pci.device(D.nic, "sriov_drivers_autoprobe"), 0o644), (pci.device(D.nic, "sriov_totalvfs"), 0o444),
                (pci.device(D.nic, "sriov_offset"), 0o444), (pci.device(D.nic, "sriov_stride"), 0o444),
                (pci.device(D.nic, "sriov_vf_device"), 0o444),
            ]
            for (path, mode) in modes {
                #expect(Syscall.lstat(path)?.st_mode == S_IFREG | mode, "\(path)")
            }
            #expect(Syscall.openOutcome(pci.device(D.nvme, "reset"), O_RDONLY) == .failed(EACCES))
            #expect(Syscall.openOutcome(pci.driverKnob("nvme", "bind"), O_RDWR) == .failed(EACCES))
            #expect(Syscall.openOutcome(pci.device(D.nic, "sriov_totalvfs"), O_WRONLY) == .failed(EACCES))
            // Root may write without capabilities (bind does not check them);
            // anybody else is stopped by the mode at open.
            let noAdmin = bash("setpriv --bounding-set -sys_admin --inh-caps=-all bash -c 'echo \(D.nvme) > \(pci.driverKnob("nvme", "bind"))'")
            #expect(noAdmin.stderr.contains("write error: Device or resource busy"), "\(noAdmin.stderr)")
            let nobody = sh("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo vfio-pci > \(pci.device(D.nvme, "driver_override"))'")
            #expect(nobody.status != 0 && nobody.stderr.contains("Permission denied"), "\(nobody.stderr)")
            #expect(Syscall.text(pci.device(D.nvme, "driver_override")) == "(null)\n")
            // Bridges and the host bridge have no reset method, hence no `reset`.
            #expect(Syscall.openOutcome(pci.device("0000:00:1c.0", "reset"), O_WRONLY) == .failed(ENOENT))
            #expect(Syscall.openOutcome(pci.device("0000:00:00.0", "reset"), O_WRONLY) == .failed(ENOENT))
        }
    }
}

// MARK: - Shared helpers for the PCI-side tests

/// Addresses of the default machine (README "What the mount serves").
enum DefaultPCI {
    static let nvme = "0000:02:00.0"
    static let nic = "0000:03:00.0"
    static let untrustedNIC = "0000:04:00.0"
    static let rtl8139 = "0000:05:00.0"
    static let usbOHCI = "0000:05:01.0"
    static let pciBridge = "0000:00:1e.0"

    static let bootDevices: Set<String> = [
        "0000:00:00.0", "0000:00:01.0", "0000:01:00.0", "0000:01:00.1", "0000:00:14.0", "0000:00:1c.0", nvme,
        "0000:00:1c.4", nic, "0000:00:1d.0", untrustedNIC, pciBridge, rtl8139, usbOHCI,
        "0000:00:1f.0", "0000:00:1f.3", "0000:00:1f.4",
    ]

    /// Group id → members at boot.
    static let bootGroups: [Int: Set<String>] = [
        0: ["0000:00:00.0"], 1: ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"], 2: ["0000:00:14.0"],
        3: ["0000:00:1c.0", nvme], 4: ["0000:00:1c.4", nic], 5: ["0000:00:1d.0", untrustedNIC],
        6: [pciBridge, rtl8139, usbOHCI], 7: ["0000:00:1f.0", "0000:00:1f.3", "0000:00:1f.4"],
    ]
}

/// Paths and reads of the PCI side of a mounted machine.
struct SysfsPCI {
    let m: MountedMachine
    init(_ m: MountedMachine) { self.m = m }

    /// `bus/pci/devices/<bdf>`, or a file below it (followed through the link).
    func device(_ bdf: String, _ file: String? = nil) -> String {
        m.path("bus/pci/devices/" + bdf + (file.map { "/" + $0 } ?? ""))
    }

    /// `bus/pci/drivers/<driver>/<knob>`.
    func driverKnob(_ driver: String, _ knob: String) -> String { m.path("bus/pci/drivers/\(driver)/\(knob)") }

    var driversProbe: String { m.path("bus/pci/drivers_probe") }
    var rescan: String { m.path("bus/pci/rescan") }

    func type(_ group: Int) -> String { m.path("kernel/iommu_groups/\(group)/type") }

    /// The group's type without the newline, nil if unreadable.
    func typeText(_ group: Int) -> String? { Syscall.text(type(group)).map { String($0.dropLast()) } }

    /// The driver whose directory lists the device (readdir, which always
    /// asks the server, unlike a path walk that may use a cached dentry).
    func driver(of bdf: String) -> String? {
        let drivers = Syscall.list(m.path("bus/pci/drivers")).filter { bound(to: $0).contains(bdf) }
        return drivers.count == 1 ? drivers[0] : drivers.isEmpty ? nil : "several: \(drivers)"
    }

    /// The target of the device's `driver` link.
    func driverLink(of bdf: String) -> String? { Syscall.readlink(device(bdf, "driver")) }

    /// The id the device's `iommu_group` link names.
    func group(of bdf: String) -> Int? { Syscall.readlink(device(bdf, "iommu_group")).flatMap { Int(lastComponent($0)) } }

    /// The group directories, by id.
    func groupIDs() -> [Int] { Syscall.list(m.path("kernel/iommu_groups")).compactMap { Int($0) }.sorted() }

    /// The group's `devices/` entries.
    func members(_ group: Int) -> Set<String> { Set(Syscall.list(m.path("kernel/iommu_groups/\(group)/devices"))) }

    /// Every group with its members, as `ls` shows them now.
    func groupMap() -> [Int: Set<String>] {
        Dictionary(uniqueKeysWithValues: groupIDs().map { ($0, members($0)) })
    }

    /// `bus/pci/devices` entries.
    func devices() -> Set<String> { Set(Syscall.list(m.path("bus/pci/devices"))) }

    /// The devices listed in `bus/pci/drivers/<driver>`.
    func bound(to driver: String) -> Set<String> {
        Set(Syscall.list(m.path("bus/pci/drivers/" + driver)).filter { $0.hasPrefix("0000:") })
    }

    private func lastComponent(_ path: String) -> String { String(path.split(separator: "/").last ?? "") }
}
