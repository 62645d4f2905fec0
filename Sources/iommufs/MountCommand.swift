import ArgumentParser
import CFuse
import Control
import FuseServer
import Glibc
import IOMMUCore
import Logging
import Sysfs
import Topology

/// `iommufs mount`: boot a machine description and serve it.
struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Boot a machine description and serve it as a sysfs tree at MOUNTPOINT.",
        discussion: """
            The mount point becomes a sysfs root: kernel/iommu_groups, devices/pci0000:00, \
            bus/pci, class/iommu. Without --foreground the server detaches once mounted; stop it \
            with `fusermount3 -u MOUNTPOINT`. In the foreground, Ctrl-C unmounts.

            Examples:
              # the embedded default machine, until Ctrl-C
              iommufs mount mnt --foreground -o allow_other
              # a machine of your own, in the background
              iommufs mount mnt --topology machine.json
              # the oracle's QEMU q35 machine, behaving like Linux 6.12
              iommufs mount mnt --machine qemu-q35-vtd --profile linux-6.12
              # then, e.g., a type change in an unbound group
              echo identity > mnt/kernel/iommu_groups/4/type

            A control socket for `iommufs ctl` is created beside the mount point (mount point \
            /x/mnt → /x/.mnt.iommufs-ctl) or at --control PATH, mode 0600, and removed when the \
            server stops.

            The mount point must be an empty directory (-o nonempty mounts over one that is not) \
            and not already served by another iommufs; a stale mount left by a killed server is \
            detached first. Messages go to stderr, and once detached to the system log \
            (journalctl -t iommufs).
            """
    )

    @Argument(help: ArgumentHelp("The directory to mount on (it must exist and be empty).", valueName: "mountpoint"))
    var mountpoint: String

    @Option(help: ArgumentHelp(
        "A JSON machine description (see the README's Topology section); the embedded default machine when absent. Example: --topology machine.json",
        valueName: "file"))
    var topology: String?

    @Option(help: ArgumentHelp(
        "A built-in machine instead of the embedded default: \(Topology.builtinMachines.map(\.name).joined(separator: ", ")). Not with --topology. Example: --machine qemu-q35-vtd",
        valueName: "name"))
    var machine: String?

    @Option(help: ArgumentHelp(
        "The kernel whose behaviour the machine reproduces: \(KernelProfile.all.map(\.name).joined(separator: ", ")) (default \(KernelProfile.current.name)). Example: --profile linux-6.12",
        valueName: "name"))
    var profile: String?

    @Option(help: ArgumentHelp(
        "Where to create the control socket for `iommufs ctl --socket PATH` instead of beside the mount point. Example: --control /run/iommufs.sock",
        valueName: "path"))
    var control: String?

    @Flag(help: "Stay in the foreground (Ctrl-C unmounts) instead of detaching after the mount. Example: --foreground")
    var foreground = false

    @Option(name: .customShort("o"), help: ArgumentHelp(
        "Mount options, comma-separated; supported: allow_other (let every user in, as everybody can read /sys), nonempty (mount over a directory that has entries, hiding them). Example: -o allow_other",
        valueName: "options"))
    var mountOptions: [String] = []

    @Flag(help: "Copy every kernel log line to stderr as it is logged (foreground only). Example: --dmesg")
    var dmesg = false

    @Flag(help: "Serve requests on one thread instead of libfuse's worker pool. Example: --single-threaded")
    var singleThreaded = false

    @Flag(help: "Print every FUSE request on stderr (libfuse's -d; implies --foreground). Example: --debug")
    var debug = false

    func validate() throws {
        if topology != nil && machine != nil {
            throw ValidationError("--machine and --topology cannot be used together")
        }
        if let machine, Topology.builtinMachine(named: machine) == nil {
            throw ValidationError("unknown machine '\(machine)' (built-in: \(Topology.builtinMachines.map(\.name).joined(separator: ", ")))")
        }
        if let profile, KernelProfile.named(profile) == nil {
            throw ValidationError("unknown profile '\(profile)' (known: \(KernelProfile.all.map(\.name).joined(separator: ", ")))")
        }
        for option in mountOptions.flatMap({ $0.split(separator: ",") }) where !Self.supportedMountOptions.contains(String(option)) {
            throw ValidationError("unsupported mount option '\(option)' (supported: \(Self.supportedMountOptions.joined(separator: ", ")))")
        }
    }

    private static let supportedMountOptions = ["allow_other", "nonempty"]

    /// True if `-o` named `option`.
    private func hasMountOption(_ option: String) -> Bool {
        mountOptions.contains { $0.split(separator: ",").contains(Substring(option)) }
    }

    private var logger: Logger { DaemonLog.logger }

    func run() throws {
        let log = dmesg ? KernelLog(sink: printLogLine) : KernelLog()
        let (machine, text) = bootDocument(log: log)
        // Decoding a big machine leaves tens of megabytes of freed heap
        // behind (the JSON tree, the decoded description): give it back.
        malloc_trim(0)
        let (server, controlServer) = mountAndListen(machine, text)
        do throws(FuseServerError) {
            try FuseServer.daemonize(foreground: foreground || debug)
        } catch {
            fail(error.description)
        }
        if !(foreground || debug) { DaemonLog.detach() }
        // After the fork of daemonize: threads do not survive it.
        do throws(ControlSocketError) {
            try controlServer.start()
        } catch {
            logger.error("\(error) (serving without it)")
        }
        let status = server.serve()
        controlServer.stop()
        // Unmounted and the socket removed: exit without releasing the
        // machine and tree object by object, which takes seconds for a big
        // machine and would delay a mount that waits to reuse the CPU.
        Glibc.exit(status)
    }

    /// The document of --topology (or the embedded default); any problem
    /// ends the process with a message naming the file and field.
    private func loadDocument() -> TopologyDocument {
        do throws(TopologyError) {
            if let name = machine, let document = Topology.builtinMachine(named: name) { return document }
            return try topology.map { path throws(TopologyError) in try TopologyDocument.load(contentsOf: path) }
                ?? TopologyDocument.defaultMachine
        } catch {
            fail(error.description)
        }
    }

    /// The document's machine, booted, with the state a dump carries
    /// restored, and the document's text for `dump`; the decoded document
    /// itself is released on return.
    private func bootDocument(log: KernelLog) -> (Machine, DocumentText) {
        let document = loadDocument()
        do throws(TopologyError) {
            return (try document.boot(profile: profile.flatMap(KernelProfile.named), log: log), document.text)
        } catch {
            fail(error.description)
        }
    }

    /// Mounts, then opens the control socket (before daemonize, so that its
    /// errors reach the terminal). If either fails nothing is left behind:
    /// the server unmounts when it is released, before the exit.
    private func mountAndListen(_ machine: Machine, _ document: DocumentText) -> (FuseServer, ControlServer) {
        let options = MountOptions(mountpoint: mountpoint, allowOther: hasMountOption("allow_other"),
                                   singleThreaded: singleThreaded, debug: debug, allowNonEmpty: hasMountOption("nonempty"))
        let message: String
        do throws(FuseServerError) {
            let server = try FuseServer(tree: MachineTree(machine: machine).tree, options: options, logger: logger)
            try server.mount()
            do throws(ControlSocketError) {
                let path = control.map(absolutePath) ?? ControlSocket.defaultPath(forMountpoint: server.mountpoint!)
                return (server, try ControlServer(path: path, machine: machine, document: document, logger: logger))
            } catch {
                message = error.description
            }
        } catch {
            message = error.description
        }
        fail(message)
    }

    /// `path` from the working directory at start (daemonize changes it to /).
    private func absolutePath(_ path: String) -> String {
        guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        return String(cString: cwd) + "/" + path
    }

    private func fail(_ message: String) -> Never {
        logger.error("\(message)")
        Glibc.exit(1)
    }
}

/// Copies a kernel log line to stderr (`--dmesg`).
@Sendable func printLogLine(_ line: KernelLog.Line) { printError(line.description) }

/// One line on stderr (Swift 6 forbids the global `stderr` stream).
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}
