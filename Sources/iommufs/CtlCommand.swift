import ArgumentParser
import Control
import IOMMUCore
import Topology
import SystemPackage

/// `iommufs ctl`: drives what sysfs has no knob for (VFIO and iommufd
/// users, the first DMA mapping, fault injection) and shows what the
/// kernel would log or hold, through a mounted server's control socket.
struct CtlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctl",
        abstract: "Talk to a running iommufs server through its control socket.",
        discussion: """
            Name the server by its mount point (--mount; the socket is beside it: /x/mnt → \
            /x/.mnt.iommufs-ctl) or by the socket itself (--socket, for `mount --control PATH`). \
            Only root and the user running the server may connect, at most 64 connections at \
            once (one more is refused with EAGAIN). On failure the exit status is 1 and stderr \
            says `iommufs: EPERM: <what failed>`.

            Examples:
              iommufs ctl --mount mnt vfio attach --container c1 4
              echo identity > mnt/kernel/iommu_groups/4/type      # Operation not permitted
              iommufs ctl --mount mnt vfio detach 4
              iommufs ctl --mount mnt inject domain-alloc ENOMEM --once
              iommufs ctl --mount mnt dmesg | tail -3
              iommufs ctl --mount mnt dump > state.json           # loadable with --topology
            """,
        subcommands: [Vfio.self, IOMMUFD.self, DMAMap.self, Inject.self, Dmesg.self, Dump.self, Trace.self]
    )

    @Option(help: ArgumentHelp("The mount point of the server to talk to. Example: --mount mnt", valueName: "mountpoint"))
    var mount: String?

    @Option(help: ArgumentHelp("The server's control socket (as given to `mount --control`). Example: --socket /run/iommufs.sock",
                               valueName: "path"))
    var socket: String?

    /// Connects, runs `body`, and turns a failure into `iommufs: ERRNO: message` and exit status 1.
    /// (The choice of --mount or --socket is checked here, not in `validate`:
    /// a failing parent validation would hide the subcommands' --help.)
    func withClient(_ body: (ControlClient) throws(ControlFailure) -> Void) throws {
        guard (mount == nil) != (socket == nil) else {
            printError("Error: name the server with either --mount or --socket (see 'iommufs ctl --help')")
            throw ExitCode.validationFailure
        }
        do throws(ControlFailure) {
            let path = if let socket { socket } else { try ControlSocket.defaultPath(forMountpointAt: mount!) }
            try body(try ControlClient(socketPath: path))
        } catch {
            printError("iommufs: " + error.description)
            throw ExitCode.failure
        }
    }
}

/// A PCI address argument: `dddd:bb:dd.f`, or `bb:dd.f` in domain 0000.
private func pciAddress(_ text: String) throws -> PCIAddress {
    let full = text.count == 7 ? "0000:" + text : text
    guard let address = PCIAddress(full.lowercased()) else {
        throw ValidationError("'\(text)' is not a PCI address (expected dddd:bb:dd.f)")
    }
    return address
}

extension CtlCommand {
    struct Vfio: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "vfio",
            abstract: "Legacy VFIO containers (type1): a user claims whole groups.",
            discussion: """
                One verb per step of a VFIO user (drivers/vfio/container.c, group.c). A container is named \
                (NAME stands for its file descriptor); a group's file is named by the group id (the kernel \
                allows one open file per group). Each verb prints what the ioctl returned when that is a \
                value, and fails with the kernel's errno otherwise. `attach` to a container never opened \
                is a whole user in one step: SET_CONTAINER and SET_IOMMU(type1v2).

                Example (the transcripts' `vfiohold`):
                  iommufs ctl --mount mnt vfio open-container c1
                  iommufs ctl --mount mnt vfio api-version c1              # 0
                  iommufs ctl --mount mnt vfio check-extension c1 type1v2  # 1
                  iommufs ctl --mount mnt vfio open-group 10
                  iommufs ctl --mount mnt vfio status 10                   # viable=1 container_set=0
                  iommufs ctl --mount mnt vfio attach --container c1 10
                  iommufs ctl --mount mnt vfio set-iommu c1 type1v2
                  iommufs ctl --mount mnt vfio map-dma c1 --iova 0x100000 --size 0x1000
                  iommufs ctl --mount mnt vfio get-device-fd 10 0000:01:00.0
                  iommufs ctl --mount mnt vfio release 10
                  iommufs ctl --mount mnt vfio close-container c1
                """,
            subcommands: [OpenContainer.self, CloseContainer.self, APIVersion.self, CheckExtension.self, SetIOMMU.self, MapDMA.self,
                          OpenGroup.self, Status.self, Attach.self, Detach.self, GetDeviceFD.self, Release.self])
    }

    struct IOMMUFD: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "iommufd",
            abstract: "iommufd device binding: devices of a group share ownership within one context.",
            subcommands: [Bind.self, Unbind.self])
    }
}

extension CtlCommand.Vfio {
    struct Attach: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a group's container (VFIO_GROUP_SET_CONTAINER).",
            discussion: """
                EINVAL if the group already has a container. The group is claimed for its VFIO group: \
                EPERM while a member is bound to a driver that uses the DMA API, EINVAL (with the \
                firmware's 1:1 log line) when a member has a direct region. Its members move to the \
                blocking domain; once the container's IOMMU is set (now, or by `set-iommu`), to the \
                container's domain for their IOMMU driver, shared with the container's other groups \
                behind units of the same driver, else a new one. A container never opened is created \
                with its IOMMU set to type1v2 at once. Unbinding a member's driver meanwhile waits for \
                the attach. While attached, `type` writes get EPERM and normal drivers fail to bind \
                with EBUSY.

                Example:
                  iommufs ctl --mount mnt vfio attach --container c1 4
                """)

        @ParentCommand var ctl: CtlCommand

        @Option(help: ArgumentHelp("The container, created on first use. Example: --container c1", valueName: "name"))
        var container: String

        @Argument(help: ArgumentHelp("The IOMMU group id. Example: 4", valueName: "group"))
        var group: Int

        func request() throws -> ControlRequest {
            return .vfioAttach(container: container, group: group)
        }
    }

    struct Detach: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            abstract: "Detach a group from its container (VFIO_GROUP_UNSET_CONTAINER).",
            discussion: """
                Ownership is released and the group's default domain is attached again. EINVAL if \
                the group is in no container, EBUSY while a device file of the group is open. The last \
                group leaving a container unsets its IOMMU and drops its mappings.

                Example:
                  iommufs ctl --mount mnt vfio detach 4
                """)

        @ParentCommand var ctl: CtlCommand

        @Argument(help: ArgumentHelp("The IOMMU group id. Example: 4", valueName: "group"))
        var group: Int

        func request() throws -> ControlRequest {
            return .vfioDetach(group: group)
        }
    }
}

/// A container name argument.
struct VFIOContainerName: ParsableArguments {
    @Argument(help: ArgumentHelp("The container. Example: c1", valueName: "container"))
    var container: String
}

/// A group id argument: the group's file.
struct VFIOGroupID: ParsableArguments {
    @Argument(help: ArgumentHelp("The IOMMU group id. Example: 10", valueName: "group"))
    var group: Int
}

/// The container and extension `check-extension` and `set-iommu` name.
struct VFIOContainerExtension: ParsableArguments {
    @Argument(help: ArgumentHelp("The container. Example: c1", valueName: "container"))
    var container: String

    @Argument(help: ArgumentHelp("The extension: \(VFIOExtension.allCases.map(\.name).joined(separator: ", ")). Example: type1v2",
                                 valueName: "ext"))
    var ext: String

    func validate() throws { _ = try vfioExtension(ext) }

    func resolved() throws -> (container: String, ext: VFIOExtension) { (container, try vfioExtension(ext)) }
}

/// A `VFIO_CHECK_EXTENSION` / `VFIO_SET_IOMMU` argument by name.
private func vfioExtension(_ name: String) throws -> VFIOExtension {
    guard let ext = VFIOExtension(name: name) else {
        throw ValidationError("unknown VFIO extension '\(name)' (known: \(VFIOExtension.allCases.map(\.name).joined(separator: ", ")))")
    }
    return ext
}

/// A number in decimal or with `0x`.
private func unsignedNumber(_ text: String, _ what: String) throws -> UInt64 {
    let number = text.lowercased().hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    guard let number, number <= UInt64(Int.max) else { throw ValidationError("\(what) '\(text)' is not a number (decimal or 0x hex)") }
    return number
}

extension CtlCommand.Vfio {
    struct OpenContainer: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "open-container",
            abstract: "Open /dev/vfio/vfio: a new, empty container called NAME (EEXIST if the name is taken).",
            discussion: "Example:\n  iommufs ctl --mount mnt vfio open-container c1")

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var name: VFIOContainerName

        func request() throws -> ControlRequest {
            return .vfioOpenContainer(container: name.container)
        }
    }

    struct CloseContainer: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "close-container",
            abstract: "Close the container's file; it lives on while groups use it (EBADF if not open).",
            discussion: "Example:\n  iommufs ctl --mount mnt vfio close-container c1")

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var name: VFIOContainerName

        func request() throws -> ControlRequest {
            return .vfioCloseContainer(container: name.container)
        }
    }

    struct APIVersion: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "api-version",
            abstract: "VFIO_GET_API_VERSION on an open container: prints 0 (VFIO_API_VERSION).",
            discussion: "Example:\n  iommufs ctl --mount mnt vfio api-version c1")

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var name: VFIOContainerName

        func run() throws {
            try ctl.withClient { client throws(ControlFailure) in print(try client.value(.vfioAPIVersion(container: name.container))) }
        }
    }

    struct CheckExtension: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-extension",
            abstract: "VFIO_CHECK_EXTENSION on an open container: prints 1 if the IOMMU backend supports EXT, else 0.",
            discussion: """
                Extensions: \(VFIOExtension.allCases.map(\.name).joined(separator: ", ")). The machine's only \
                backend is vfio_iommu_type1.

                Example:
                  iommufs ctl --mount mnt vfio check-extension c1 type1v2
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var target: VFIOContainerExtension

        func run() throws {
            let (container, ext) = try target.resolved()
            try ctl.withClient { client throws(ControlFailure) in print(try client.value(.vfioCheckExtension(container: container, ext))) }
        }
    }

    struct SetIOMMU: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-iommu",
            abstract: "VFIO_SET_IOMMU: give the container its IOMMU backend; its groups join domains.",
            discussion: """
                EINVAL without a group or when already set; ENODEV for an extension no backend \
                offers (noiommu, spapr-tce); EINVAL for a type1 feature that is not a backend \
                (unmap-all). If a group fails to attach, the others go back to their blocking domain.

                Example:
                  iommufs ctl --mount mnt vfio set-iommu c1 type1v2
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var target: VFIOContainerExtension

        func request() throws -> ControlRequest {
            let (container, ext) = try target.resolved()
            return .vfioSetIOMMU(container: container, ext)
        }
    }

    struct MapDMA: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "map-dma",
            abstract: "VFIO_IOMMU_MAP_DMA: map SIZE bytes at IOVA in the container.",
            discussion: """
                EINVAL before set-iommu, for a zero, unaligned (4 KiB) or wrapping range, or one that \
                meets a reserved region (not direct-relaxable) of a group in the container; EEXIST \
                over an existing mapping.

                Example:
                  iommufs ctl --mount mnt vfio map-dma c1 --iova 0x100000 --size 0x1000
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var name: VFIOContainerName

        @Option(help: ArgumentHelp("The IOVA (decimal or 0x hex). Example: --iova 0x100000", valueName: "iova"))
        var iova: String

        @Option(help: ArgumentHelp("The length in bytes (decimal or 0x hex). Example: --size 0x1000", valueName: "size"))
        var size: String

        func validate() throws {
            _ = try unsignedNumber(iova, "--iova")
            _ = try unsignedNumber(size, "--size")
        }

        func request() throws -> ControlRequest {
            let (iova, size) = (try unsignedNumber(iova, "--iova"), try unsignedNumber(size, "--size"))
            return .vfioMapDMA(container: name.container, iova: iova, size: size)
        }
    }

    struct OpenGroup: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "open-group",
            abstract: "Open /dev/vfio/GROUP: ENOENT unless a member is bound to vfio-pci, EBUSY if already open.",
            discussion: "Example:\n  iommufs ctl --mount mnt vfio open-group 10")

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var id: VFIOGroupID

        func request() throws -> ControlRequest {
            return .vfioOpenGroup(group: id.group)
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "VFIO_GROUP_GET_STATUS of an open group: prints `viable=1 container_set=0`.",
            discussion: """
                Viable when the group has a container, or when nothing claims its DMA: no member bound \
                to a driver that uses the DMA API (vfio-pci, pci-stub and pcieport do not), no other user.

                Example:
                  iommufs ctl --mount mnt vfio status 10
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var id: VFIOGroupID

        func run() throws {
            try ctl.withClient { client throws(ControlFailure) in print(try client.vfioGroupStatus(id.group)) }
        }
    }

    struct GetDeviceFD: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "get-device-fd",
            abstract: "VFIO_GROUP_GET_DEVICE_FD: open a device of an open group.",
            discussion: """
                ENODEV unless the device is a member bound to vfio-pci; EINVAL without a container or \
                before set-iommu. While a device is open, `detach` gets EBUSY.

                Example:
                  iommufs ctl --mount mnt vfio get-device-fd 10 0000:01:00.0
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var id: VFIOGroupID

        @Argument(help: ArgumentHelp("The device. Example: 0000:01:00.0", valueName: "bdf"))
        var device: String

        func validate() throws { _ = try pciAddress(device) }

        func request() throws -> ControlRequest {
            let address = try pciAddress(device)
            return .vfioGetDeviceFD(group: id.group, device: address)
        }
    }

    struct Release: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            abstract: "Close the group's file and its device files, as the user's exit does (EBADF if not open).",
            discussion: """
                The group leaves its container (as `detach`), and the default domain comes back.

                Example:
                  iommufs ctl --mount mnt vfio release 10
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var id: VFIOGroupID

        func request() throws -> ControlRequest {
            return .vfioRelease(group: id.group)
        }
    }
}

/// The context and device both iommufd verbs name.
struct IOMMUFDTarget: ParsableArguments {
    @Option(help: ArgumentHelp("The iommufd context. Example: --context ctx1", valueName: "name"))
    var context: String

    @Argument(help: ArgumentHelp("The device. Example: 0000:03:00.0", valueName: "bdf"))
    var device: String

    func validate() throws { _ = try pciAddress(device) }

    func resolved() throws -> (context: String, device: PCIAddress) { (context, try pciAddress(device)) }
}

extension CtlCommand.IOMMUFD {
    struct Bind: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bind a device to an iommufd context (VFIO_DEVICE_BIND_IOMMUFD).",
            discussion: """
                The first device of a group claims it (as `vfio attach` does); more devices of the \
                group may bind to the same context, each adding an owner reference; another context, \
                or a normal driver bound in the group, gets EPERM. A device binds once (EINVAL).

                Example:
                  iommufs ctl --mount mnt iommufd bind --context ctx1 0000:03:00.0
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var target: IOMMUFDTarget

        func request() throws -> ControlRequest {
            let (context, address) = try target.resolved()
            return .iommufdBind(context: context, device: address)
        }
    }

    struct Unbind: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unbind a device from its iommufd context.",
            discussion: """
                The last device of the context gives the group back to its default domain. EINVAL \
                if the device is not bound to that context.

                Example:
                  iommufs ctl --mount mnt iommufd unbind --context ctx1 0000:03:00.0
                """)

        @ParentCommand var ctl: CtlCommand
        @OptionGroup var target: IOMMUFDTarget

        func request() throws -> ControlRequest {
            let (context, address) = try target.resolved()
            return .iommufdUnbind(context: context, device: address)
        }
    }
}

extension CtlCommand {
    struct DMAMap: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            commandName: "dma-map",
            abstract: "The device's first DMA mapping: its deferred attach (iommu_deferred_attach).",
            discussion: """
                A device marked attach_deferred in the topology is not attached at probe; this \
                attaches it to its group's default domain, under the group lock. EBUSY while the \
                device is being reset. For any other device it does nothing.

                Example:
                  iommufs ctl --mount mnt dma-map 0000:03:00.0
                """)

        @ParentCommand var ctl: CtlCommand

        @Argument(help: ArgumentHelp("The device. Example: 0000:03:00.0", valueName: "bdf"))
        var device: String

        func validate() throws { _ = try pciAddress(device) }

        func request() throws -> ControlRequest {
            let address = try pciAddress(device)
            return .dmaMap(device: address)
        }
    }

    struct Inject: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Arm, list or clear a failure or a stall at a point of the IOMMU core.",
            discussion: """
                Points: \(FaultPoint.allCases.map(\.rawValue).joined(separator: ", ")). Every failed \
                operation leaves its group exactly as it was, with the kernel's log line where it \
                prints one. A stall holds the operation, with every lock the kernel holds there, for \
                the time given (at most 60 s), then lets it go on: a window for a concurrent request.

                Examples:
                  iommufs ctl --mount mnt inject domain-alloc ENOMEM --once
                  iommufs ctl --mount mnt inject attach EIO --times 2
                  iommufs ctl --mount mnt inject fq-init ENOMEM --always --probability 0.5
                  iommufs ctl --mount mnt inject attach --stall 500ms --once
                  iommufs ctl --mount mnt inject --list
                  iommufs ctl --mount mnt inject clear fq-init
                """,
            subcommands: [Arm.self, Clear.self],
            defaultSubcommand: Arm.self)
    }

    struct Dmesg: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the kernel log ring, oldest first, as dmesg does.",
            discussion: """
                Examples:
                  iommufs ctl --mount mnt dmesg | grep 'iommu group'
                  iommufs ctl --mount mnt dmesg --clear     # like dmesg -c: the next read shows only newer lines
                """)

        @ParentCommand var ctl: CtlCommand

        @Flag(help: "Clear after printing, like dmesg -c: later reads start after these lines. Example: --clear")
        var clear = false

        func run() throws {
            try ctl.withClient { client throws(ControlFailure) in
                var out = OutputBuffer()
                for line in try client.dmesg(clear: clear) { out.append(line + "\n") }
                out.flush()
            }
        }
    }

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the machine and its current state as a topology document.",
            discussion: """
                The document is the machine description the server booted, with a `state` section: \
                group ids and types, bound drivers, driver_override and other knobs, VFs, VFIO \
                containers, iommufd bindings. `iommufs mount --topology` boots it into the same \
                state, and a dump of that machine is the same document.

                Example:
                  iommufs ctl --mount mnt dump > state.json
                  iommufs mount mnt2 --topology state.json
                """)

        @ParentCommand var ctl: CtlCommand

        func run() throws {
            try ctl.withClient { client throws(ControlFailure) in
                var out = OutputBuffer()
                out.append(try client.dump().prettyText)
                out.flush()
            }
        }
    }

    struct Trace: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the machine's events as they happen, until Ctrl-C (or --count of them).",
            discussion: """
                One line per event: device-added, device-removed, group-created, group-released, \
                domain-attached, type-changed, owner-claimed, owner-released, driver-bound, \
                driver-unbound, with key=value fields. Once subscribed, `iommufs: tracing` goes to \
                stderr, so a script can start acting. A trace that falls 4096 events behind (its \
                output paused, say in a pager) is dropped by the server: the events it got are \
                printed, then `iommufs: ENOBUFS: trace dropped: ...`, and the exit status is 1.

                Examples:
                  iommufs ctl --mount mnt trace
                  iommufs ctl --mount mnt trace --count 2    # type-changed group=4 from=DMA-FQ to=identity, ...
                """)

        @ParentCommand var ctl: CtlCommand

        @Option(help: ArgumentHelp("Stop after this many events. Example: --count 2", valueName: "n"))
        var count: Int?

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        }

        func run() throws {
            try ctl.withClient { client throws(ControlFailure) in
                try client.startTrace(count: count)
                printError("iommufs: tracing" + (count.map { " until \($0) event\($0 == 1 ? "" : "s")" } ?? "; Ctrl-C stops"))
                var seen = 0
                var out = OutputBuffer()
                while let line = try client.nextEvent() {
                    out.append(line + "\n")
                    out.flush()
                    seen += 1
                }
                if let count, seen < count {
                    throw ControlFailure(.connectionReset, "the server ended the trace after \(seen) of \(count) events")
                }
            }
        }
    }
}

extension CtlCommand.Inject {
    struct Arm: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make POINT fail with ERRNO, or stall (the default: `inject POINT ERRNO`); --list shows what is armed.",
            discussion: """
                Examples:
                  iommufs ctl --mount mnt inject domain-alloc ENOMEM --once
                  iommufs ctl --mount mnt inject reset-prepare --stall 300ms
                  iommufs ctl --mount mnt inject --list
                """)

        @ParentCommand var ctl: CtlCommand

        @Argument(help: ArgumentHelp("Where: \(FaultPoint.allCases.map(\.rawValue).joined(separator: ", ")). Example: domain-alloc",
                                     valueName: "point"))
        var point: String?

        @Argument(help: ArgumentHelp("The errno to fail with (not with --stall). Example: ENOMEM", valueName: "errno"))
        var errno: String?

        @Option(help: ArgumentHelp("Hold the operation this long instead of failing it: a number with ms or s. Example: --stall 500ms",
                                   valueName: "time"))
        var stall: String?

        @Flag(help: "Print what is armed, one line each, in the form of this command's arguments. Example: --list")
        var list = false

        @Flag(help: "Fire once (the default). Example: --once")
        var once = false

        @Option(help: ArgumentHelp("Fire this many times. Example: --times 3", valueName: "n"))
        var times: Int?

        @Flag(help: "Fire every time, until `inject clear POINT`. Example: --always")
        var always = false

        @Option(help: ArgumentHelp("The chance that it fires when reached (0 to 1; 1 by default). Example: --probability 0.5",
                                   valueName: "p"))
        var probability: Double = 1

        @Option(help: ArgumentHelp("Let this many operations through first (0 by default); 1 fails a group's second attach. Example: --skip 1",
                                   valueName: "n"))
        var skip: Int = 0

        func validate() throws {
            if list {
                guard point == nil, errno == nil, stall == nil else { throw ValidationError("--list takes no point, errno or --stall") }
                return
            }
            guard let point else { throw ValidationError("give a point (or --list)") }
            _ = try faultPoint(point)
            switch (errno, stall) {
            case (let errno?, nil):
                guard Errno(kernelName: errno) != nil else {
                    throw ValidationError("unknown errno '\(errno)' (known: \(Errno.kernelNames.joined(separator: ", ")))")
                }
            case (nil, let stall?): _ = try stallDuration(stall)
            case (nil, nil): throw ValidationError("give an errno to fail with, or --stall TIME")
            case (_?, _?): throw ValidationError("an errno and --stall exclude each other")
            }
            guard [once, times != nil, always].filter({ $0 }).count <= 1 else {
                throw ValidationError("choose one of --once, --times N and --always")
            }
            if let times, times < 1 { throw ValidationError("--times must be at least 1") }
            guard (0...1).contains(probability) else { throw ValidationError("--probability must be from 0 to 1") }
            guard skip >= 0 else { throw ValidationError("--skip must be 0 or more") }
        }

        func run() throws {
            if list {
                try ctl.withClient { client throws(ControlFailure) in
                    for fault in try client.armedFaults() { print(Self.arguments(of: fault)) }
                }
                return
            }
            let effect: FaultInjector.Effect = try stall.map { .stall(try stallDuration($0)) } ?? .fail(Errno(kernelName: errno!)!)
            let fault = FaultInjector.Fault(effect, remaining: always ? nil : times ?? 1, probability: probability, skip: skip)
            let point = try faultPoint(point!)
            try ctl.withClient { client throws(ControlFailure) in try client.perform(.inject(point, fault)) }
        }

        /// `attach --stall 500ms --times 1`: a listed fault as the arguments that arm it.
        static func arguments(of fault: JSON) -> String {
            typealias Key = FaultCoding.Key
            var words = [fault[Key.point.rawValue]?.stringValue ?? "?"]
            if let errno = fault[Key.errno.rawValue]?.stringValue { words.append(errno) }
            if let ms = fault[Key.stallMs.rawValue]?.intValue { words += ["--stall", "\(ms)ms"] }
            if let times = fault[Key.times.rawValue]?.intValue { words += ["--times", String(times)] } else { words.append("--always") }
            if let p = fault[Key.probability.rawValue]?.doubleValue { words += ["--probability", String(p)] }
            if let n = fault[Key.skip.rawValue]?.intValue { words += ["--skip", String(n)] }
            return words.joined(separator: " ")
        }
    }

    struct Clear: CtlRequestCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disarm POINT.",
            discussion: """
                Example:
                  iommufs ctl --mount mnt inject clear domain-alloc
                """)

        @ParentCommand var ctl: CtlCommand

        @Argument(help: ArgumentHelp("The point to disarm. Example: domain-alloc", valueName: "point"))
        var point: String

        func validate() throws { _ = try faultPoint(point) }

        func request() throws -> ControlRequest {
            let point = try faultPoint(point)
            return .clearFault(point)
        }
    }
}

/// `500ms`, `2s`: a stall's length, whole milliseconds or seconds.
private func stallDuration(_ text: String) throws -> Duration {
    let (digits, unit): (Substring, Duration) = text.hasSuffix("ms") ? (text.dropLast(2), .milliseconds(1))
        : text.hasSuffix("s") ? (text.dropLast(1), .seconds(1)) : ("", .zero)
    guard let count = Int(digits), count > 0, unit != .zero, unit * count <= FaultInjector.maximumStall else {
        throw ValidationError("--stall takes a time from 1ms to 60s, such as 500ms or 2s, not '\(text)'")
    }
    return unit * count
}

private func faultPoint(_ name: String) throws -> FaultPoint {
    guard let point = FaultPoint(rawValue: name) else {
        throw ValidationError("unknown fault point '\(name)' (known: \(FaultPoint.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return point
}

/// A verb that sends one request and prints nothing when it succeeds.
protocol CtlRequestCommand: ParsableCommand {
    var ctl: CtlCommand { get }
    /// The request; an argument that does not parse throws first.
    func request() throws -> ControlRequest
}

extension CtlRequestCommand {
    func run() throws {
        let request = try request()
        try ctl.withClient { client throws(ControlFailure) in try client.perform(request) }
    }
}
