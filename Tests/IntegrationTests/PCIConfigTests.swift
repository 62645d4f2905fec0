import Foundation
import Glibc
import Testing

/// `config` and the PCI core's other device files on the oracle's alt
/// machine, through the mount with real syscalls.
@Suite("PCI config space") struct PCIConfigTests {
    static let alt = ["--machine", "qemu-q35-alt"]
    static let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]

    @Test("config: st_size is cfg_size; root reads all of it, an unprivileged opener the first 64 bytes")
    func sizes() throws {
        try MountedMachine.with(arguments: Self.alt) { m in
            let pcie = m.path("bus/pci/devices/0000:05:00.0/config")
            let conventional = m.path("bus/pci/devices/0000:09:00.0/config")
            #expect(Syscall.lstat(pcie)?.st_size == 4096)
            #expect(Syscall.lstat(conventional)?.st_size == 256)
            #expect(Syscall.bytes(pcie)?.count == 4096)
            #expect(Syscall.bytes(conventional)?.count == 256)
            let out = IntegrationTests.run("/usr/bin/setpriv", Self.nobody + ["wc", "-c", pcie])
            #expect(out.stdout.hasPrefix("64 "), "\(out)")
            // Vendor, device and class as the identity files show them.
            let header = try #require(Syscall.bytes(conventional))
            #expect(Array(header[0..<4]) == [0x36, 0x1b, 0x05, 0x00])
            #expect(Array(header[0x09...0x0b]) == [0x00, 0xff, 0x00])
            // A write past the end: EFBIG (sysfs_kf_bin_write).
            #expect(Syscall.write(conventional, [1], offset: 256) == .failed(EFBIG))
            // Interrupt Line is writable, Vendor ID is not.
            #expect(Syscall.write(conventional, [0x0b], offset: 0x3c) == .ok(1))
            #expect(Syscall.write(conventional, [0xff, 0xff], offset: 0) == .ok(2))
            let after = try #require(Syscall.bytes(conventional))
            #expect(after[0x3c] == 0x0b && after[0] == 0x36)
        }
    }

    @Test("SR-IOV control and NumVFs follow sriov_numvfs; the VF has no SR-IOV capability")
    func sriovRegisters() throws {
        try MountedMachine.with(arguments: Self.alt) { m in
            let pf = m.path("bus/pci/devices/0000:05:00.0/config")
            #expect(Syscall.bytes(pf).map(PCIConfigDecoder.describe)?.hasSuffix("num:0,offset:1,stride:1,vfdev:0010,ctl:0010") == true)
            #expect(Syscall.write(m.path("bus/pci/devices/0000:05:00.0/sriov_numvfs"), "2") == .ok(1))
            #expect(Syscall.bytes(pf).map(PCIConfigDecoder.describe)?.hasSuffix("num:2,offset:1,stride:1,vfdev:0010,ctl:0019") == true)
            #expect(Syscall.bytes(m.path("bus/pci/devices/0000:05:00.1/config")).map(PCIConfigDecoder.describe)
                    == "hdr=0 caps=11,10,01 ext=000e pcie=endpoint ari=1")
            let msix = m.path("bus/pci/devices/0000:05:00.1/sriov_vf_msix_count")
            #expect(Syscall.write(msix, "-1") == .failed(EINVAL))
            #expect(Syscall.write(msix, "4") == .failed(EOPNOTSUPP))
        }
    }

    @Test("enable: EBUSY while bound; counts enables of an unbound device; EIO disabling a disabled one")
    func enable() throws {
        try MountedMachine.with(arguments: Self.alt) { m in
            let bound = m.path("bus/pci/devices/0000:07:00.0/enable")
            #expect(Syscall.text(bound) == "1\n")
            #expect(Syscall.write(bound, "0") == .failed(EBUSY))
            let unbound = m.path("bus/pci/devices/0000:09:00.0/enable")
            #expect(Syscall.text(unbound) == "0\n")
            #expect(Syscall.write(unbound, "0") == .failed(EIO))
            #expect(Syscall.write(unbound, "x") == .failed(EINVAL))
            #expect(Syscall.write(unbound, "1") == .ok(1))
            #expect(Syscall.write(unbound, "y") == .ok(1))
            #expect(Syscall.text(unbound) == "2\n")
            // PCI_COMMAND: memory decoding on, no bus master (no driver).
            #expect(Syscall.bytes(m.path("bus/pci/devices/0000:09:00.0/config"))?[4] == 0x02)
        }
    }

    @Test("uevent, modalias and resource of a device; drivers_autoprobe and resource_alignment of the bus")
    func textFiles() throws {
        try MountedMachine.with(arguments: Self.alt) { m in
            #expect(Syscall.text(m.path("bus/pci/devices/0000:07:00.0/uevent")) == """
                DRIVER=e1000e
                PCI_CLASS=20000
                PCI_ID=8086:10D3
                PCI_SUBSYS_ID=0000:0000
                PCI_SLOT_NAME=0000:07:00.0
                MODALIAS=pci:v00008086d000010D3sv00000000sd00000000bc02sc00i00

                """)
            #expect(Syscall.text(m.path("bus/pci/devices/0000:00:04.0/resource"))?.split(separator: "\n").count == 17)
            let autoprobe = m.path("bus/pci/drivers_autoprobe")
            #expect(Syscall.text(autoprobe) == "1\n")
            #expect(Syscall.write(autoprobe, "0x") == .ok(2))
            #expect(Syscall.text(autoprobe) == "0\n")
            let alignment = m.path("bus/pci/resource_alignment")
            #expect(Syscall.text(alignment) == "")
            #expect(Syscall.write(alignment, "4096@0000:07:00.0\nignored") == .ok(25))
            #expect(Syscall.text(alignment) == "4096@0000:07:00.0\n")
            #expect(Syscall.write(alignment, "\n") == .ok(1))
            #expect(Syscall.text(alignment) == "")
            #expect(Syscall.write(alignment, String(repeating: "a", count: 4095)) == .failed(EINVAL))
        }
    }

    /// pciutils is one of the packages `make test` installs (Makefile `deps`).
    @Test("lspci -vv decodes the mount (pciutils' linux-sysfs access with sysfs.path)")
    func lspci() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/lspci"), "lspci missing: run `make deps` (installs pciutils)")
        try MountedMachine.with(arguments: Self.alt) { m in
            let out = IntegrationTests.run("/usr/bin/lspci", ["-A", "linux-sysfs", "-O", "sysfs.path=" + m.path("bus/pci"),
                                                              "-s", "00:04.0", "-vv"])
            #expect(out.status == 0)
            #expect(out.stdout.contains("Express (v2) Root Port (Slot+)"))
            #expect(out.stdout.contains("HotPlug+") && out.stdout.contains("Slot #4,"))
            #expect(out.stdout.contains("Bus: primary=00, secondary=07, subordinate=07"))
            #expect(out.stdout.contains("Access Control Services"))
            #expect(out.stdout.contains("Kernel driver in use: pcieport"))
            #expect(out.stdout.contains("I/O behind bridge: d000-dfff"), "\(out.stdout)")
            #expect(out.stdout.contains("Memory behind bridge: fd600000-fd6fffff"))
            let nic = IntegrationTests.run("/usr/bin/lspci", ["-A", "linux-sysfs", "-O", "sysfs.path=" + m.path("bus/pci"),
                                                              "-s", "07:00.0", "-vv"])
            #expect(nic.stdout.contains("Region 0: Memory at fd640000 (32-bit, non-prefetchable) [size=128K]"), "\(nic.stdout)")
            #expect(nic.stdout.contains("Region 2: I/O ports at d000 [disabled] [size=32]"))
            #expect(nic.stdout.contains("Expansion ROM at fd600000 [disabled] [size=256K]"))
            let virtio = IntegrationTests.run("/usr/bin/lspci", ["-A", "linux-sysfs", "-O", "sysfs.path=" + m.path("bus/pci"),
                                                                 "-s", "08:00.0", "-vv"])
            #expect(virtio.stdout.contains("Region 4: Memory at fe400000 (64-bit, prefetchable) [size=16K]"), "\(virtio.stdout)")
        }
    }

    @Test("resource: start, end and flags of each BAR, ROM and window (resource_show, decode_bar)")
    func resources() throws {
        try MountedMachine.with(arguments: Self.alt) { m in
            let lines = Syscall.text(m.path("bus/pci/devices/0000:06:00.1/resource"))?.split(separator: "\n") ?? []
            try #require(lines.count == 13)
            #expect(lines[0] == "0x0000000000000000 0x0000000000000000 0x0000000000000000")
            #expect(lines[1] == "0x00000000fd948000 0x00000000fd948fff 0x0000000000040200")
            #expect(lines[4] == "0x00000000fe800000 0x00000000fe803fff 0x000000000014220c")
            #expect(lines[6] == "0x00000000fd840000 0x00000000fd87ffff 0x0000000000046200")
            let io = Syscall.text(m.path("bus/pci/devices/0000:09:00.0/resource"))?.split(separator: "\n") ?? []
            #expect(io.count == 13 && io[1] == "0x000000000000c000 0x000000000000c0ff 0x0000000000040101")
            let bridge = Syscall.text(m.path("bus/pci/devices/0000:00:06.0/resource"))?.split(separator: "\n") ?? []
            try #require(bridge.count == 17)
            #expect(bridge[13] == "0x000000000000c000 0x000000000000cfff 0x0000000000000100")
            #expect(bridge[14] == "0x00000000fd200000 0x00000000fd3fffff 0x0000000000000200")
            #expect(bridge[15] == "0x00000000fe200000 0x00000000fe3fffff 0x0000000000102201")
            // A function without described resources reads as unassigned.
            #expect(Syscall.text(m.path("bus/pci/devices/0000:05:00.0/resource"))
                == String(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000\n", count: 13))
        }
    }
}
