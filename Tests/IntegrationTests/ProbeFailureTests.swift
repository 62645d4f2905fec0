import Foundation
import Glibc
import Testing
import Topology

/// Probes that fail, and failures a store could once end in with a
/// kernel-internal errno (EPROBE_DEFER, 517), which FUSE refuses to
/// deliver: the writer then never returned. Every write here is bounded in
/// time, so a regression fails instead of hanging. The errnos follow
/// drivers/base: `bind_store` → `device_driver_attach` (EPROBE_DEFER →
/// EAGAIN), `drivers_probe_store` (EINVAL when `bus_rescan_devices_helper`
/// fails; case 42 in CtlTests shows it for a VFIO-owned group). The
/// deferral of `iommu_device_use_default_domain` (a group without a default
/// domain, v6.14 and 6.6.y/6.12.y) has no state to show it on such kernels:
/// a failed hot-plug probe leaves no such group (below), and a no-IOMMU
/// group exists only while vfio-pci drives its device.
@Suite("Probe failures") struct ProbeFailureTests {
    typealias D = DefaultPCI

    @Test("a kernel-internal errno cannot be injected: ctl says why, and the next type write answers")
    func internalErrnoRefused() throws {
        try MountedMachine.with { m in
            for errno in ["EPROBE_DEFER", "errno 512", "errno 600"] {
                let result = m.ctl("inject", "attach", errno, "--once")
                #expect(result.status == 1)
                #expect(result.failure?.hasPrefix("EINVAL: \(errno) is internal to the kernel") == true, "\(result.stderr)")
            }
            #expect(Syscall.boundedWrite(SysfsPCI(m).type(4), "identity") == .ok(8))
        }
    }

    @Test("a driver's own probe failing: bind passes its errno on (EPROBE_DEFER as EAGAIN), drivers_probe leaves the device unbound")
    func driverProbeFails() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.driverKnob("nvme", "unbind"), D.nvme) == .ok(12))
            try m.ctlOK("inject", "probe", "EPROBE_DEFER", "--once")
            #expect(Syscall.boundedWrite(pci.driverKnob("nvme", "bind"), D.nvme) == .failed(EAGAIN))
            try m.ctlOK("inject", "probe", "ENOMEM", "--once")
            #expect(Syscall.boundedWrite(pci.driverKnob("nvme", "bind"), D.nvme) == .failed(ENOMEM))
            try m.ctlOK("inject", "probe", "EIO", "--once")
            #expect(Syscall.boundedWrite(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == nil)
            // The failed probes gave the group reference back: the type can change.
            #expect(Syscall.boundedWrite(pci.type(3), "identity") == .ok(8))
            let dmesg = try m.ctlOK("dmesg")
            #expect(dmesg.contains("] nvme 0000:02:00.0: probe with driver nvme failed with error -12\n"))
            #expect(dmesg.contains("] nvme 0000:02:00.0: probe with driver nvme failed with error -5\n"))
            #expect(!dmesg.contains("error -517"))
            #expect(Syscall.boundedWrite(pci.driversProbe, D.nvme) == .ok(12))
            #expect(pci.driver(of: D.nvme) == "nvme")
            // Other kernel-internal codes would reach the writer of bind: refused.
            #expect(m.ctl("inject", "probe", "errno 524").failure?.hasPrefix("EINVAL: errno 524 is internal to the kernel") == true)
        }
    }

    @Test("v6.5+: a hot-added device whose new group gets no default domain leaves it; the next device gets a group; the dump mounts")
    func failedHotplugProbe() throws {
        try MountedMachine.with(arguments: ["--machine", "qemu-q35-alt"]) { m in
            let pci = SysfsPCI(m)
            let port = "0000:02:01.0", disk = "0000:04:00.0"
            let portPath = "devices/pci0000:00/0000:00:01.0/0000:01:00.0/" + port
            #expect(Syscall.boundedWrite(m.path(portPath + "/remove"), "1") == .ok(1))
            #expect(pci.groupIDs().contains(10) == false)
            try m.ctlOK("inject", "domain-alloc", "ENOMEM", "--once")
            #expect(Syscall.boundedWrite(pci.rescan, "1") == .ok(1))
            // The port is back on the bus, in no group and without `iommu`
            // links (iommu_deinit_device); the disk behind it probed into a
            // new group with the lowest free id, and nvme bound.
            #expect(pci.devices().contains(port))
            #expect(Syscall.readlink(m.path(portPath + "/iommu_group")) == nil)
            #expect(Syscall.readlink(m.path(portPath + "/iommu")) == nil)
            #expect(!Syscall.list(m.path("devices/virtual/iommu/dmar0/devices")).contains(port))
            #expect(pci.members(10) == [disk])
            #expect(pci.typeText(10) == "DMA")
            #expect(pci.driver(of: disk) == "nvme")
            #expect(Syscall.boundedWrite(pci.driverKnob("nvme", "unbind"), disk) == .ok(12))
            #expect(Syscall.boundedWrite(pci.driverKnob("nvme", "bind"), disk) == .ok(12))
            let dmesg = try m.ctlOK("dmesg")
            #expect(dmesg.contains("pci \(port): Adding to iommu group 10\n"))
            #expect(dmesg.contains("pci \(disk): Adding to iommu group 10\n"))
            expectConsistentTree(m)
            try expectDumpRoundTrip(m)
        }
    }

    @Test("up to v6.4 the failure leaves the group without a default domain; the dump mounts")
    func failedHotplugProbeOn61() throws {
        try MountedMachine.with(arguments: ["--machine", "qemu-q35-alt", "--profile", "linux-6.1"]) { m in
            let pci = SysfsPCI(m)
            let port = "0000:02:01.0", disk = "0000:04:00.0"
            #expect(Syscall.boundedWrite(pci.device(port, "remove"), "1") == .ok(1))
            try m.ctlOK("inject", "domain-alloc", "ENOMEM", "--always")
            #expect(Syscall.boundedWrite(pci.rescan, "1") == .ok(1))
            try m.ctlOK("inject", "clear", "domain-alloc")
            #expect(pci.members(10) == [port, disk])
            #expect(pci.typeText(10) == "unknown")
            // 6.1 binds without a default domain (no EPROBE_DEFER yet).
            #expect(pci.driver(of: disk) == "nvme")
            try expectDumpRoundTrip(m)
        }
    }
}
