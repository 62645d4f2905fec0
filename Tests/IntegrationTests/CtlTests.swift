import Foundation
import Glibc
import Testing
import Topology

/// `iommufs ctl` through a real mount and its control socket, with the real
/// binary: VFIO and iommufd users (kernel-behaviour §5 and §14 cases 30,
/// 31, 39, 42–45), the deferred attach (§8), fault injection at each point,
/// dmesg, dump and trace, and who may connect.
@Suite("ctl") struct CtlTests {
    typealias D = DefaultPCI

    @Test("the issue's outcome: a VFIO user blocks type writes and driver binds; an injected ENOMEM changes nothing")
    func outcome() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            expectWriteError("echo identity > \(pci.type(4))", "Operation not permitted")
            expectWriteError("echo \(D.nic) > \(pci.driverKnob("igb", "bind"))", "Device or resource busy")
            #expect(pci.driver(of: D.nic) == nil)
            try m.ctlOK("vfio", "detach", "4")
            try m.ctlOK("inject", "domain-alloc", "ENOMEM", "--once")
            expectWriteError("echo identity > \(pci.type(4))", "Cannot allocate memory")
            #expect(pci.typeText(4) == "DMA-FQ")
            #expect(bash("echo identity > \(pci.type(4))").status == 0)
            #expect(pci.typeText(4) == "identity")
            let dmesg = try m.ctlOK("dmesg")
            #expect(dmesg.contains("] pci 0000:03:00.0: Adding to iommu group 4\n"), "\(dmesg)")
            try expectDumpRoundTrip(m)
        }
    }

    // MARK: VFIO and iommufd (§5, §14)

    @Test("case 30: with a VFIO container attached, identity gets EPERM; after the detach it works")
    func case30() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            #expect(Syscall.write(pci.type(4), "identity") == .failed(EPERM))
            #expect(m.ctl("vfio", "attach", "--container", "c2", "4").failure == "EINVAL: vfio attach of group 4 to container c2: Invalid argument")
            try m.ctlOK("vfio", "detach", "4")
            // vfio_group_ioctl_unset_container: no container is EINVAL.
            #expect(m.ctl("vfio", "detach", "4").failure == "EINVAL: vfio detach of group 4: Invalid argument")
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
        }
    }

    @Test("case 31: a VFIO-owned group of type DMA takes the live switch to DMA-FQ")
    func case31() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.type(4), "DMA") == .ok(3))
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            #expect(Syscall.write(pci.type(4), "DMA-FQ") == .ok(6))
            #expect(pci.typeText(4) == "DMA-FQ")
            #expect(Syscall.write(pci.type(4), "DMA") == .failed(EPERM))
        }
    }

    @Test("case 42: while VFIO owns the group, a normal driver's probe of a member fails with EBUSY (drivers_probe: EINVAL)")
    func case42() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .failed(EBUSY))
            // The same failing probe through drivers_probe_store is EINVAL.
            #expect(Syscall.write(pci.driversProbe, D.nic) == .failed(EINVAL))
            // vfio-pci manages DMA itself: it binds.
            #expect(Syscall.write(pci.device(D.nic, "driver_override"), "vfio-pci") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.nic) == .ok(12))
            #expect(pci.driver(of: D.nic) == "vfio-pci")
            try m.ctlOK("vfio", "detach", "4")
        }
    }

    @Test("a VFIO user step by step (the transcripts' vfiohold): each ioctl's value or errno, and the group's type while held")
    func vfioUserSteps() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(m.ctl("vfio", "open-group", "4").failure == "ENOENT: vfio open of group 4: No such file or directory")
            #expect(Syscall.write(pci.device(D.nic, "driver_override"), "vfio-pci") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.nic) == .ok(12))
            try m.ctlOK("vfio", "open-container", "c1")
            #expect(m.ctl("vfio", "open-container", "c1").failure == "EEXIST: vfio open of container c1: File exists")
            #expect(try m.ctlOK("vfio", "api-version", "c1") == "0\n")
            #expect(try m.ctlOK("vfio", "check-extension", "c1", "type1v2") == "1\n")
            #expect(try m.ctlOK("vfio", "check-extension", "c1", "noiommu") == "0\n")
            #expect(m.ctl("vfio", "status", "4").failure == "EBADF: VFIO_GROUP_GET_STATUS of group 4: Bad file descriptor")
            try m.ctlOK("vfio", "open-group", "4")
            #expect(m.ctl("vfio", "open-group", "4").failure == "EBUSY: vfio open of group 4: Device or resource busy")
            #expect(try m.ctlOK("vfio", "status", "4") == "viable=1 container_set=0\n")
            #expect(m.ctl("vfio", "set-iommu", "c1", "type1v2").failure == "EINVAL: VFIO_SET_IOMMU(type1v2) on container c1: Invalid argument")
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            #expect(try m.ctlOK("vfio", "status", "4") == "viable=1 container_set=1\n")
            #expect(Syscall.write(pci.type(4), "identity") == .failed(EPERM))
            #expect(m.ctl("vfio", "get-device-fd", "4", D.nic).failure
                    == "EINVAL: VFIO_GROUP_GET_DEVICE_FD of 0000:03:00.0 in group 4: Invalid argument")
            #expect(m.ctl("vfio", "map-dma", "c1", "--iova", "0", "--size", "4096").failure
                    == "EINVAL: VFIO_IOMMU_MAP_DMA of 4096 bytes at IOVA 0x0 on container c1: Invalid argument")
            #expect(m.ctl("vfio", "set-iommu", "c1", "noiommu").failure == "ENODEV: VFIO_SET_IOMMU(noiommu) on container c1: No such device")
            try m.ctlOK("vfio", "set-iommu", "c1", "type1v2")
            try m.ctlOK("vfio", "map-dma", "c1", "--iova", "0", "--size", "4096")
            #expect(m.ctl("vfio", "map-dma", "c1", "--iova", "0", "--size", "0x2000").failure
                    == "EEXIST: VFIO_IOMMU_MAP_DMA of 8192 bytes at IOVA 0x0 on container c1: File exists")
            #expect(m.ctl("vfio", "map-dma", "c1", "--iova", "0xfee00000", "--size", "4096").failure?.hasPrefix("EINVAL: ") == true)
            #expect(m.ctl("vfio", "get-device-fd", "4", "0000:00:1c.4").failure
                    == "ENODEV: VFIO_GROUP_GET_DEVICE_FD of 0000:00:1c.4 in group 4: No such device")
            try m.ctlOK("vfio", "get-device-fd", "4", D.nic)
            #expect(try m.dumpState()["vfio_containers"]?.compactText == #"[{"name":"c1","domains":[[4]]}]"#)
            #expect(m.ctl("vfio", "detach", "4").failure == "EBUSY: vfio detach of group 4: Device or resource busy")
            try m.ctlOK("vfio", "release", "4")
            #expect(m.ctl("vfio", "release", "4").failure == "EBADF: vfio release of group 4: Bad file descriptor")
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
            try m.ctlOK("vfio", "close-container", "c1")
            #expect(m.ctl("vfio", "api-version", "c1").failure == "EBADF: VFIO_GET_API_VERSION on container c1: Bad file descriptor")
            #expect(try m.dumpState()["vfio_containers"] == nil)
        }
    }

    @Test("a group that is not viable: status says so, SET_CONTAINER gets EPERM, and the group stays as it was")
    func vfioNotViable() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            // Group 6: the USB controller on vfio-pci, the RTL8139 still on 8139too.
            #expect(Syscall.write(pci.device(D.usbOHCI, "driver_override"), "vfio-pci") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.usbOHCI) == .ok(12))
            try #require(pci.driver(of: D.usbOHCI) == "vfio-pci" && pci.driver(of: D.rtl8139) == "8139too")
            try m.ctlOK("vfio", "open-container", "c1")
            try m.ctlOK("vfio", "open-group", "6")
            #expect(try m.ctlOK("vfio", "status", "6") == "viable=0 container_set=0\n")
            #expect(m.ctl("vfio", "attach", "--container", "c1", "6").failure
                    == "EPERM: vfio attach of group 6 to container c1: Operation not permitted")
            #expect(try m.ctlOK("vfio", "status", "6") == "viable=0 container_set=0\n")
            #expect(m.ctl("vfio", "get-device-fd", "6", D.rtl8139).failure
                    == "ENODEV: VFIO_GROUP_GET_DEVICE_FD of 0000:05:00.0 in group 6: No such device")
            try m.ctlOK("vfio", "release", "6")
            try m.ctlOK("vfio", "close-container", "c1")
        }
    }

    @Test("case 43: a member bound to a normal driver makes the VFIO claim and the iommufd bind fail with EPERM")
    func case43() throws {
        try MountedMachine.with { m in
            #expect(m.ctl("vfio", "attach", "--container", "c1", "3").failure
                    == "EPERM: vfio attach of group 3 to container c1: Operation not permitted")
            #expect(m.ctl("iommufd", "bind", "--context", "ctx", D.nvme).failure
                    == "EPERM: iommufd bind of 0000:02:00.0 to context ctx: Operation not permitted")
            #expect(m.ctl("iommufd", "bind", "--context", "ctx", "0000:00:1c.0").failure
                    == "EPERM: iommufd bind of 0000:00:1c.0 to context ctx: Operation not permitted")
            #expect(SysfsPCI(m).driver(of: D.nvme) == "nvme")
            let state = try m.dumpState()
            #expect(state["vfio_containers"] == nil)
        }
    }

    @Test("case 44: a member with a direct region refuses the blocking domain: EINVAL and the firmware line")
    func case44() throws {
        let topology = Topology.defaultMachineJSON.replacingOccurrences(
            of: #""ats": true,"#, with: #""ats": true, "reserved_regions": [ { "start": "0x1000", "end": "0x1fff", "type": "direct" } ],"#)
        try withTopology(topology) { m in
            #expect(m.ctl("vfio", "attach", "--container", "c1", "4").failure
                    == "EINVAL: vfio attach of group 4 to container c1: Invalid argument")
            let dmesg = try m.ctlOK("dmesg")
            #expect(dmesg.hasSuffix("] pci 0000:03:00.0: Firmware has requested this device have a 1:1 IOMMU mapping, "
                                    + "rejecting configuring the device without a 1:1 mapping. Contact your platform vendor.\n"), "\(dmesg)")
            // Nothing is owned: the type can change and igb can bind.
            #expect(Syscall.write(SysfsPCI(m).type(4), "identity") == .ok(8))
            #expect(Syscall.write(SysfsPCI(m).driverKnob("igb", "bind"), D.nic) == .ok(12))
        }
    }

    @Test("case 45: iommufd shares a group within one context and counts its devices; the last unbind gives it back")
    func case45() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            try m.ctlOK("iommufd", "bind", "--context", "ctx1", "0000:00:1c.4")
            try m.ctlOK("iommufd", "bind", "--context", "ctx1", D.nic)
            #expect(try m.dumpState()["iommufd"]?.compactText == #"[{"context":"ctx1","devices":["0000:00:1c.4","0000:03:00.0"]}]"#)
            #expect(m.ctl("iommufd", "bind", "--context", "ctx1", D.nic).failure
                    == "EINVAL: iommufd bind of 0000:03:00.0 to context ctx1: Invalid argument")
            #expect(m.ctl("vfio", "attach", "--container", "c1", "4").failure
                    == "EPERM: vfio attach of group 4 to container c1: Operation not permitted")
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .failed(EBUSY))
            try m.ctlOK("iommufd", "unbind", "--context", "ctx1", D.nic)
            #expect(Syscall.write(pci.type(4), "identity") == .failed(EPERM))
            #expect(m.ctl("iommufd", "unbind", "--context", "ctx2", "0000:00:1c.4").failure
                    == "EINVAL: iommufd unbind of 0000:00:1c.4 from context ctx2: Invalid argument")
            try m.ctlOK("iommufd", "unbind", "--context", "ctx1", "0000:00:1c.4")
            let state = try m.dumpState()
            #expect(state["iommufd"] == nil)
            #expect(Syscall.write(pci.type(4), "identity") == .ok(8))
        }
    }

    @Test("case 45: another context gets EPERM, for any device of the group")
    func case45OtherContext() throws {
        try MountedMachine.with { m in
            try m.ctlOK("iommufd", "bind", "--context", "ctx1", D.nic)
            #expect(m.ctl("iommufd", "bind", "--context", "ctx2", "0000:00:1c.4").failure
                    == "EPERM: iommufd bind of 0000:00:1c.4 to context ctx2: Operation not permitted")
        }
    }

    // MARK: Deferred attach (§8)

    @Test("dma-map performs the deferred attach, and fails with EBUSY while the device is being reset")
    func deferredAttach() throws {
        let topology = Topology.defaultMachineJSON.replacingOccurrences(
            of: #""ats": true,"#, with: #""ats": true, "attach_deferred": true, "reset_ms": 1000,"#)
        try withTopology(topology) { m in
            let nicState = { try m.dumpState()["devices"]?.arrayValue?.first { $0["address"] == .string(D.nic) } }
            #expect(try nicState()?["dma_mapped"] == nil)
            let reset = whileResetting(m, D.nic) {
                #expect(m.ctl("dma-map", D.nic).failure == "EBUSY: dma-map of 0000:03:00.0: Device or resource busy")
            }
            #expect(reset == .ok(1))
            #expect(try nicState()?["dma_mapped"] == nil)
            try m.ctlOK("dma-map", D.nic)
            #expect(try nicState()?["dma_mapped"] == .bool(true))
            // Once attached, another map is a no-op; devices that never deferred take it too.
            try m.ctlOK("dma-map", "03:00.0")
            try m.ctlOK("dma-map", D.nvme)
            #expect(m.ctl("dma-map", "0000:09:00.0").failure == "ENODEV: there is no PCI device 0000:09:00.0")
            try expectDumpRoundTrip(m)
        }
    }

    // MARK: Fault injection

    /// An operation that reaches a fault point, and the errno text bash
    /// prints for it (nil: a ctl verb, which prints the errno name).
    struct FaultCase: Sendable, CustomTestStringConvertible {
        var point: String
        var errno: String
        /// Run before arming (e.g. to make group 4's type DMA).
        var setup: [String] = []
        /// A shell write or a ctl verb (`ctl:` prefix) that hits the point.
        var action: String
        var expected: String
        var testDescription: String { "\(point) via \(action)" }
    }

    static let faultCases = [
        FaultCase(point: "domain-alloc", errno: "ENOMEM", action: "echo identity > TYPE4", expected: "write error: Cannot allocate memory"),
        FaultCase(point: "domain-alloc", errno: "ENOSPC", action: "ctl:vfio attach --container c1 4",
                  expected: "ENOSPC: vfio attach of group 4 to container c1: No space left on device"),
        FaultCase(point: "attach", errno: "EIO", action: "echo DMA > TYPE4", expected: "write error: Input/output error"),
        FaultCase(point: "attach", errno: "EBUSY", action: "ctl:vfio attach --container c1 4",
                  expected: "EBUSY: vfio attach of group 4 to container c1: Device or resource busy"),
        FaultCase(point: "fq-init", errno: "ENOMEM", setup: ["echo DMA > TYPE4"], action: "echo DMA-FQ > TYPE4",
                  expected: "write error: Cannot allocate memory"),
        FaultCase(point: "blocking-domain-alloc", errno: "ENOMEM", action: "ctl:vfio attach --container c1 4",
                  expected: "ENOMEM: vfio attach of group 4 to container c1: Cannot allocate memory"),
        FaultCase(point: "blocking-domain-alloc", errno: "ENOMEM", action: "ctl:iommufd bind --context ctx 0000:03:00.0",
                  expected: "ENOMEM: iommufd bind of 0000:03:00.0 to context ctx: Cannot allocate memory"),
    ]

    @Test("an injected failure fails the operation and leaves the whole state as it was; the next try succeeds", arguments: faultCases)
    func injectedFailure(_ fault: FaultCase) throws {
        try MountedMachine.with { m in
            let perform = { (action: String) -> CommandResult in
                action.hasPrefix("ctl:") ? m.ctl(action.dropFirst(4).split(separator: " ").map(String.init))
                    : bash(action.replacingOccurrences(of: "TYPE4", with: SysfsPCI(m).type(4)))
            }
            for step in fault.setup { #expect(perform(step).status == 0) }
            let before = try m.ctlOK("dump")
            try m.ctlOK("inject", fault.point, fault.errno)
            let failed = perform(fault.action)
            #expect(failed.status != 0)
            #expect(failed.stderr.contains(fault.expected), "\(failed.stderr)")
            #expect(try m.ctlOK("dump") == before)
            #expect(perform(fault.action).status == 0, "the fault fired once only")
            #expect(try m.ctlOK("dump") != before)
        }
    }

    @Test("fq-init failing logs the kernel's line; the type stays DMA")
    func flushQueueLogLine() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.type(4), "DMA") == .ok(3))
            try m.ctlOK("inject", "fq-init", "ENOMEM")
            #expect(Syscall.write(pci.type(4), "DMA-FQ") == .failed(ENOMEM))
            #expect(pci.typeText(4) == "DMA")
            #expect(try m.ctlOK("dmesg").hasSuffix("] iova flush queue initialization failed\n"))
        }
    }

    @Test("--times N fails N times, --always until cleared, --probability 0 never")
    func injectCounts() throws {
        try MountedMachine.with { m in
            let type = SysfsPCI(m).type(4)
            try m.ctlOK("inject", "domain-alloc", "ENOMEM", "--times", "2")
            #expect(Syscall.write(type, "identity") == .failed(ENOMEM))
            #expect(Syscall.write(type, "identity") == .failed(ENOMEM))
            #expect(Syscall.write(type, "identity") == .ok(8))
            try m.ctlOK("inject", "domain-alloc", "EIO", "--always")
            for _ in 0..<3 { #expect(Syscall.write(type, "DMA") == .failed(EIO)) }
            try m.ctlOK("inject", "clear", "domain-alloc")
            #expect(Syscall.write(type, "DMA") == .ok(3))
            try m.ctlOK("inject", "domain-alloc", "EIO", "--always", "--probability", "0")
            #expect(Syscall.write(type, "identity") == .ok(8))
            try m.ctlOK("inject", "domain-alloc", "EIO", "--always", "--probability", "1")
            #expect(Syscall.write(type, "DMA") == .failed(EIO))
        }
    }

    @Test("bad arguments are refused before anything is sent")
    func badArguments() throws {
        try MountedMachine.with { m in
            for arguments in [["inject", "dma-alloc", "ENOMEM"], ["inject", "attach", "ENOPE"],
                              ["inject", "attach", "EIO", "--once", "--always"], ["inject", "attach", "EIO", "--probability", "2"],
                              ["dma-map", "0000:00:1g.0"], ["trace", "--count", "0"],
                              ["vfio", "check-extension", "c1", "type3"], ["vfio", "set-iommu", "c1", "TYPE1V2"],
                              ["vfio", "map-dma", "c1", "--iova", "0x", "--size", "4096"], ["vfio", "get-device-fd", "4", "3:0.0"]] {
                let result = m.ctl(arguments)
                #expect(result.status == 64, "\(arguments): \(result.stderr)")
            }
            #expect(run(MountedMachine.binary, ["ctl", "dmesg"]).status == 64)
            #expect(m.ctl("vfio", "detach", "42").failure == "ENOENT: there is no IOMMU group 42")
        }
    }

    // MARK: dmesg, dump, trace

    @Test("dmesg prints the kernel log ring with dmesg's timestamps")
    func dmesg() throws {
        try MountedMachine.with { m in
            let lines = try m.ctlOK("dmesg").split(separator: "\n").map(String.init)
            #expect(lines.first?.hasSuffix("] iommu: Default domain type: Translated") == true)
            let stamp = #/^\[ {0,4}\d{1,5}\.\d{6}\] /#
            for line in lines { #expect(line.firstMatch(of: stamp) != nil, "\(line)") }
            #expect(lines.contains { $0.hasSuffix("] pci 0000:00:00.0: Adding to iommu group 0") })
        }
    }

    @Test("dump → mount → dump gives the same document, after changes of every kind")
    func dumpRoundTrip() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.driverKnob("nvme", "unbind"), D.nvme) == .ok(12))
            #expect(Syscall.write(pci.type(3), "identity") == .ok(8))
            #expect(Syscall.write(pci.device(D.nvme, "driver_override"), "vfio-pci") == .ok(8))
            #expect(Syscall.write(pci.driversProbe, D.nvme) == .ok(12))
            #expect(Syscall.write(pci.driverKnob("igb", "bind"), D.nic) == .ok(12))
            #expect(Syscall.write(pci.device(D.nic, "sriov_numvfs"), "2") == .ok(1))
            #expect(Syscall.write(pci.device(D.usbOHCI, "remove"), "1") == .ok(1))
            try m.ctlOK("vfio", "attach", "--container", "c1", "3")
            // The VF's igbvf uses the DMA API: iommufd must wait for it to go.
            #expect(m.ctl("iommufd", "bind", "--context", "ctx", "0000:03:10.0").failure
                    == "EPERM: iommufd bind of 0000:03:10.0 to context ctx: Operation not permitted")
            #expect(Syscall.write(pci.driverKnob("igbvf", "unbind"), "0000:03:10.0") == .ok(12))
            try m.ctlOK("iommufd", "bind", "--context", "ctx", "0000:03:10.0")
            try expectDumpRoundTrip(m)
        }
    }

    @Test("trace --count streams the events of a change, then exits")
    func trace() throws {
        try MountedMachine.with { m in
            let trace = try Trace(m, count: 4)
            #expect(Syscall.write(SysfsPCI(m).type(4), "identity") == .ok(8))
            try m.ctlOK("vfio", "attach", "--container", "c1", "4")
            let (status, output) = trace.finish()
            #expect(status == 0)
            #expect(output == """
                domain-attached group=4 type=identity
                type-changed group=4 from=DMA-FQ to=identity
                domain-attached group=4 type=blocked
                owner-claimed group=4 owner=vfio-group-4

                """)
        }
    }

    // MARK: The socket

    @Test("the socket sits beside the mount point, mode 0600, and goes with the server")
    func socketPlace() throws {
        let machine = try MountedMachine.start(arguments: [])
        defer { machine.stop() }
        let socket = machine.controlSocket
        #expect(Syscall.lstat(socket).map { $0.st_mode } == S_IFSOCK | 0o600)
        #expect(run("/bin/fusermount3", ["-u", machine.root]).status == 0)
        #expect(machine.server.wait() == 0)
        #expect(Syscall.lstat(socket) == nil)
    }

    @Test("a socket left by a killed server is replaced by the next server on that mount point")
    func staleSocket() throws {
        let first = try MountedMachine.start(arguments: [])
        kill(first.server.pid, SIGKILL)
        first.server.wait()
        #expect(Syscall.lstat(first.controlSocket) != nil)
        let second = try MountedMachine.start(arguments: [], root: first.root)
        defer { second.stop() }
        #expect(try second.ctlOK("dmesg").contains("Adding to iommu group"))
    }

    @Test("--control puts the socket elsewhere; ctl --socket reaches it")
    func controlOption() throws {
        let dir = try makeTemporaryDirectory()
        defer { rmdir(dir) }
        let socket = dir + "/ctl.sock"
        try MountedMachine.with(arguments: ["--control", socket]) { m in
            #expect(Syscall.lstat(m.controlSocket) == nil)
            #expect(Syscall.lstat(socket).map { $0.st_mode } == S_IFSOCK | 0o600)
            let result = run(MountedMachine.binary, ["ctl", "--socket", socket, "dmesg"])
            #expect(result.status == 0 && result.stdout.contains("Adding to iommu group"), "\(result.stderr)")
        }
        #expect(Syscall.lstat(socket) == nil)
    }

    @Test("an unprivileged user is refused: by the socket's mode, and by the peer check when the mode lets them in")
    func unprivileged() throws {
        try MountedMachine.with { m in
            let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", MountedMachine.binary, "ctl", "--socket", m.controlSocket]
            let byMode = run("/usr/bin/setpriv", nobody + ["vfio", "attach", "--container", "c1", "4"])
            #expect(byMode.status == 1)
            #expect(byMode.stderr == "iommufs: EACCES: cannot connect to \(m.controlSocket): Permission denied\n")
            #expect(chmod(m.controlSocket, 0o666) == 0)
            let byPeer = run("/usr/bin/setpriv", nobody + ["vfio", "attach", "--container", "c1", "4"])
            #expect(byPeer.status == 1)
            #expect(byPeer.stderr == "iommufs: EPERM: uid 65534 may not use this control socket (only root may)\n")
            let state = try m.dumpState()
            #expect(state["vfio_containers"] == nil)
        }
    }

    @Test("ctl without a server says so")
    func noServer() throws {
        let dir = try makeTemporaryDirectory()
        defer { rmdir(dir) }
        let result = run(MountedMachine.binary, ["ctl", "--mount", dir, "dmesg"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("iommufs: ENOENT: cannot connect to "), "\(result.stderr)")
    }

    @Test("dump reads the topology file again: a changed file gives ESTALE, the same text dumps again")
    func dumpOfChangedFile() throws {
        let original = try MountedMachine.with { m in try m.ctlOK("dump") }
        try withTopology(original) { m, file in
            let before = try m.ctlOK("dump")
            try (original + " ").write(toFile: file, atomically: false, encoding: .utf8)
            let stale = m.ctl("dump")
            #expect(stale.status != 0)
            #expect(stale.failure?.contains("the file changed since the machine booted from it") == true, "\(stale.stderr)")
            #expect(stale.failure?.contains("ESTALE") == true, "\(stale.stderr)")
            try original.write(toFile: file, atomically: false, encoding: .utf8)
            #expect(try m.ctlOK("dump") == before)
        }
    }

    // MARK: Helpers

    private func expectWriteError(_ script: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let result = bash(script)
        #expect(result.status != 0, sourceLocation: sourceLocation)
        #expect(result.stderr.contains("write error: " + text), "\(result.stderr)", sourceLocation: sourceLocation)
    }
}

/// Mounts the machine of `json`, written to a temporary file.
func withTopology<R>(_ json: String, _ body: (MountedMachine) throws -> R) throws -> R {
    try withTopology(json) { m, _ in try body(m) }
}

/// Mounts the machine of `json`, written to a temporary file that `body`
/// also gets.
func withTopology<R>(_ json: String, _ body: (MountedMachine, String) throws -> R) throws -> R {
    let dir = try makeTemporaryDirectory()
    let file = dir + "/machine.json"
    defer {
        unlink(file)
        rmdir(dir)
    }
    try json.write(toFile: file, atomically: false, encoding: .utf8)
    return try MountedMachine.with(arguments: ["--topology", file]) { m in try body(m, file) }
}

extension MountedMachine {
    /// Where the server puts its control socket: beside the mount point,
    /// `/x/mnt` → `/x/.mnt.iommufs-ctl`.
    var controlSocket: String { Self.controlSocket(of: root) }

    /// The control socket of a server on the mount point `root`.
    static func controlSocket(of root: String) -> String {
        let slash = root.lastIndex(of: "/")!
        return root[...slash] + "." + root[root.index(after: slash)...] + ".iommufs-ctl"
    }

    func ctl(_ arguments: String...) -> CommandResult { ctl(arguments) }

    func ctl(_ arguments: [String]) -> CommandResult {
        run(MountedMachine.binary, ["ctl", "--mount", root] + arguments)
    }

    /// Runs a ctl verb that must succeed; its stdout.
    @discardableResult
    func ctlOK(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let result = ctl(arguments)
        try #require(result.status == 0, "ctl \(arguments.joined(separator: " ")): \(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout
    }

    /// The `state` section of `ctl dump`.
    func dumpState() throws -> JSON {
        try #require(try JSON.parse(Array(ctlOK("dump").utf8))["state"])
    }
}

extension CommandResult {
    /// What a failed ctl printed after `iommufs: ` (nil if it succeeded).
    var failure: String? {
        guard status != 0 else { return nil }
        return stderr.hasPrefix("iommufs: ") && stderr.hasSuffix("\n") ? String(stderr.dropFirst(9).dropLast()) : stderr
    }
}

/// `iommufs ctl trace --count N` in the background, past its "tracing" line
/// (it is subscribed from then on).
struct Trace {
    let process: Subprocess
    let output: CapturePipe

    init(_ m: MountedMachine, count: Int) throws {
        output = CapturePipe()
        let errors = CapturePipe()
        process = try Subprocess.spawn(MountedMachine.binary, ["ctl", "--mount", m.root, "trace", "--count", String(count)],
                                       stdout: output.writeEnd, stderr: errors.writeEnd)
        // The first line on stderr comes once the server has subscribed.
        let first = errors.drainLine()
        try #require(first.hasPrefix("iommufs: tracing"), "\(first)")
    }

    /// Waits for the exit; the status and everything printed on stdout.
    func finish() -> (Int32, String) {
        let text = output.drain()
        return (process.wait(), text)
    }
}

extension CapturePipe {
    /// Closes our copy of the write end and reads up to the first newline
    /// (or EOF); the read end is closed after.
    func drainLine() -> String {
        close(writeEnd)
        defer { close(readEnd) }
        var data: [UInt8] = []
        var byte: UInt8 = 0
        while data.last != UInt8(ascii: "\n") {
            let n = read(readEnd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data.append(byte)
        }
        return String(decoding: data, as: UTF8.self)
    }
}
