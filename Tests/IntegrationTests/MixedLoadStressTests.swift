import Control
import Foundation
import Glibc
import SystemPackage
import Testing
import TestSupport

/// Eight processes at once on the alt machine (a PCIe switch, an SR-IOV
/// NVMe, a three-function device), each a seeded mix of everything a user
/// can do to it: type writes, bind/unbind, driver_override + drivers_probe,
/// remove/rescan, SR-IOV, resets, tree walks, `ctl vfio` and `ctl iommufd`
/// steps, fault injection. Every call must answer as a kernel could and
/// within the bound; afterwards the machine's invariants hold. Settings
/// from the environment: `IOMMUFS_STRESS_SECONDS` (default 3; `make
/// stress` runs 60), `IOMMUFS_STRESS_SEED` (default fixed; printed).
///
/// The processes are exit tests: the test binary itself, started once per
/// worker, which reports its `CallRecord` on stdout.
@Suite("Mixed-load stress") struct MixedLoadStressTests {
    static let processes = 8
    static let machine = "qemu-q35-alt"

    @Test("8 processes of mixed load on qemu-q35-alt: every call answers as a kernel could, in time; then the invariants hold")
    func mixedLoad() async throws {
        let seed = environment("IOMMUFS_STRESS_SEED").flatMap { UInt64($0) } ?? 0x57_2e55
        let seconds = environment("IOMMUFS_STRESS_SECONDS").flatMap { Double($0) } ?? 3
        let statusDirectory = try makeTemporaryDirectory()
        let m = try MountedMachine.start(arguments: ["--machine", Self.machine])
        let watchdog = SyscallWatchdog(m, bound: .seconds(StressTests.slowCall))
        defer {
            watchdog.stop()
            m.stop()
            for index in 0..<Self.processes { unlink(statusDirectory + "/\(index)") }
            rmdir(statusDirectory)
        }
        let plan = StressPlan(m, seed: seed, seconds: seconds, statusDirectory: statusDirectory)
        let residentBefore = residentKilobytes(of: m.server.pid)
        let record = CallRecord(allowed: StressPlan.allowedErrnos)
        await watchdog.watching({ plan.oldestCall(of: Self.processes) }) {
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<Self.processes {
                    group.addTask {
                        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { [plan = plan as StressPlan, index = index as Int] in
                            StressProcess.run(plan, index: index)
                        }
                        if let result { record.absorb(String(decoding: result.standardOutputContent, as: UTF8.self)) }
                    }
                }
            }
        }
        let residentAfter = residentKilobytes(of: m.server.pid)
        print("mixed-load stress: \(Self.processes) processes x \(seconds) s on \(Self.machine) (IOMMUFS_STRESS_SEED=\(seed)): "
              + "\(record.count) calls, \(record.overBound) over the bound of \(StressTests.slowCall) s, slowest \(record.slowest) s "
              + "(\(record.slowestCall)); daemon RSS \(residentBefore ?? -1) kB before, \(residentAfter ?? -1) kB after; "
              + record.summary)
        if let hang = watchdog.takeHang() {
            // The server is dead: the processes' later calls and the
            // invariants have nothing to say.
            hang.record()
            return
        }
        #expect(record.unexpected == [], "\(record.summary)")
        #expect(record.overBound == 0, "slowest call: \(record.slowestCall) took \(record.slowest) s")
        for kind in ["type", "bind", "unbind", "driver_override", "drivers_probe", "remove", "rescan", "sriov_numvfs", "reset",
                     "readdir", "readlink", "vfio", "inject"] {
            #expect(record.kinds.contains(kind + " ok"), "never: \(kind) ok. \(record.summary)")
        }
        try expectMachineInvariants(m)
    }
}

/// The resident set of a process, from /proc/PID/status.
func residentKilobytes(of pid: pid_t) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
    return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
}

/// What the stress processes work on: the mount and the machine as it
/// booted, read from the mount before they start.
struct StressPlan: Codable, Sendable {
    struct Binding: Codable, Sendable {
        var driver: String
        var device: String
    }

    var root: String
    var serverPID: Int32
    var seed: UInt64
    var seconds: Double
    /// Where each process shows the call it is making (`status/INDEX`).
    var statusDirectory: String
    var groups: [Int]
    var devices: [String]
    /// Each device bound at boot, with its driver.
    var bindings: [Binding]
    /// The devices below the root buses (switch ports and endpoints).
    var removable: [String]
    /// The devices with a `reset` file.
    var resettable: [String]
    /// SR-IOV physical functions and their `sriov_totalvfs`.
    var physicalFunctions: [String: Int]

    /// What a store or a ctl verb may answer with under this load: the
    /// kernel's errnos for refused stores and ctl verbs; EAGAIN, which
    /// `device_driver_attach` makes of a deferred probe; ENOTTY of a reset
    /// with no method; the errnos injected here.
    static let allowedErrnos = Set<Int32>([EPERM, EINVAL, EBUSY, ENODEV, ENOENT, EEXIST, EBADF, EAGAIN, ENOTTY])
        .union(injectedErrnos.map { SystemPackage.Errno(kernelName: $0)!.rawValue })
    /// Two errnos no store gives by itself, so that any other one stands out.
    static let injectedErrnos = ["ENOMEM", "ENOSPC"]

    init(_ m: MountedMachine, seed: UInt64, seconds: Double, statusDirectory: String) {
        let pci = SysfsPCI(m)
        root = m.root
        serverPID = m.server.pid
        self.seed = seed
        self.seconds = seconds
        self.statusDirectory = statusDirectory
        groups = pci.groupIDs()
        devices = pci.devices().sorted()
        bindings = Syscall.list(m.path("bus/pci/drivers")).sorted().flatMap { driver in
            pci.bound(to: driver).sorted().map { Binding(driver: driver, device: $0) }
        }
        removable = devices.filter { !$0.hasPrefix("0000:00:") }
        resettable = devices.filter { Syscall.lstat(pci.device($0, "reset")) != nil }
        physicalFunctions = Dictionary(uniqueKeysWithValues: devices.compactMap { device in
            Syscall.text(pci.device(device, "sriov_totalvfs")).flatMap { Int($0.dropLast()) }.map { (device, $0) }
        })
    }

    /// The oldest call in progress in the processes, from their status files.
    func oldestCall(of processes: Int) -> (started: UInt64, what: String)? {
        (0..<processes).compactMap { index -> (started: UInt64, what: String)? in
            guard let shown = StatusFile.read(statusDirectory + "/\(index)") else { return nil }
            return (shown.started, "process \(index): \(shown.call)")
        }.min { $0.started < $1.started }
    }
}

/// One stress process: seeded calls of every kind until the plan's time is
/// up, then its record on stdout.
enum StressProcess {
    static func run(_ plan: StressPlan, index: Int) {
        let m = MountedMachine(root: plan.root, server: Subprocess(pid: plan.serverPID), logPath: "")
        let status = StatusFile(plan.statusDirectory + "/\(index)")
        let record = CallRecord(allowed: StressPlan.allowedErrnos, announce: { status.show($0) })
        var random = SplitMix64(seed: plan.seed &+ UInt64(index) &* 0x9e37_79b9)
        let operations = operations(plan, m)
        let weights = operations.map(\.weight).reduce(0, +)
        let deadline = Date().addingTimeInterval(plan.seconds)
        // A mount whose server is gone (killed by the watchdog) has nothing more to say.
        while Date() < deadline && !record.kinds.contains(where: { $0.hasSuffix(" ENOTCONN") }) {
            var ticket = Int(random.next() % UInt64(weights))
            let operation = operations.first { ticket -= $0.weight; return ticket < 0 }!
            operation.run(&random, record)
        }
        status.finish()
        print(record.report, terminator: "")
    }

    static let typeWords = ["identity", "DMA", "DMA-FQ", "auto", "bogus"]

    /// Every kind of call, with how often it is drawn.
    static func operations(_ plan: StressPlan, _ m: MountedMachine) -> [(weight: Int, run: StressTests.Worker)] {
        let pci = SysfsPCI(m)
        return [
            (3, { random, record in
                let group = random.pick(plan.groups), word = random.pick(typeWords)
                record.call("type", "\(word) > group \(group)") { Syscall.write(pci.type(group), word) }
            }),
            (3, { random, record in
                let binding = random.pick(plan.bindings), knob = random.pick(["bind", "unbind"])
                record.call(knob, "\(binding.device) > \(binding.driver)/\(knob)") {
                    Syscall.write(pci.driverKnob(binding.driver, knob), binding.device)
                }
            }),
            (2, { random, record in
                let binding = random.pick(plan.bindings)
                let driver = random.pick(["vfio-pci", "pci-stub", "", binding.driver])
                record.call("driver_override", "\(driver.debugDescription) > \(binding.device)") {
                    Syscall.write(pci.device(binding.device, "driver_override"), driver + "\n")
                }
                record.call("drivers_probe", binding.device) { Syscall.write(pci.driversProbe, binding.device) }
            }),
            (2, { random, record in
                if random.next() % 3 == 0 {
                    record.call("rescan") { Syscall.write(pci.rescan, "1") }
                } else {
                    let device = random.pick(plan.removable)
                    record.call("remove", device) { Syscall.write(pci.device(device, "remove"), "1") }
                }
                usleep(UInt32(random.next() % 20_000))
            }),
            (1, { random, record in
                guard let (device, total) = plan.physicalFunctions.sorted(by: { $0.key < $1.key }).randomElement(using: &random) else { return }
                let count = String(random.next() % UInt64(total + 1))
                record.call("sriov_numvfs", "\(count) > \(device)") { Syscall.write(pci.device(device, "sriov_numvfs"), count) }
            }),
            (1, { random, record in
                let device = random.pick(plan.resettable)
                record.call("reset", device) { Syscall.write(pci.device(device, "reset"), "1") }
            }),
            (3, { random, record in
                let device = random.pick(plan.devices), group = random.pick(plan.groups)
                let directory = random.pick(["kernel/iommu_groups", "kernel/iommu_groups/\(group)/devices", "bus/pci/devices",
                                             "bus/pci/drivers/\(random.pick(plan.bindings).driver)", "bus/pci/devices/\(device)"])
                record.call("readdir", directory) { listOutcome(m.path(directory)) }
                let link = random.pick(["iommu_group", "driver", "subsystem", "iommu"])
                record.call("readlink", "\(device)/\(link)") { readlinkOutcome(pci.device(device, link)) }
            }),
            (1, { random, record in
                let arguments = vfioStep(&random, plan)
                record.call("vfio", arguments.joined(separator: " ")) { ctlOutcome(m, arguments) }
            }),
            (1, { random, record in
                let arguments = RandomFault.arguments(&random, errnos: StressPlan.injectedErrnos)
                record.call("inject", arguments.joined(separator: " ")) { ctlOutcome(m, arguments) }
            }),
        ]
    }

    /// One step of a VFIO or iommufd user, or a first DMA mapping.
    static func vfioStep(_ random: inout SplitMix64, _ plan: StressPlan) -> [String] {
        let container = "c\(random.next() % 2)", group = String(random.pick(plan.groups)), device = random.pick(plan.devices)
        return random.pick([
            ["vfio", "attach", "--container", container, group], ["vfio", "detach", group],
            ["vfio", "open-container", container], ["vfio", "close-container", container],
            ["vfio", "set-iommu", container, "type1v2"], ["vfio", "open-group", group], ["vfio", "status", group],
            ["vfio", "release", group], ["vfio", "get-device-fd", group, device],
            ["vfio", "map-dma", container, "--iova", "0x\(String(random.next() % 16 << 20, radix: 16))", "--size", "0x1000"],
            ["iommufd", "bind", "--context", "ctx", device], ["iommufd", "unbind", "--context", "ctx", device],
            ["dma-map", device],
        ])
    }

    /// A ctl verb as a call: its errno by name when it fails as ctl does
    /// (`iommufs: EPERM: ...`, status 1); any other failure is `errno -STATUS`.
    static func ctlOutcome(_ m: MountedMachine, _ arguments: [String]) -> Syscall.Outcome {
        let result = m.ctl(arguments)
        if result.status == 0 { return .ok(0) }
        if result.status == 1, let name = result.failure?.prefix(while: { $0 != ":" }),
           let errno = SystemPackage.Errno(kernelName: String(name)) {
            return .failed(errno.rawValue)
        }
        return .failed(-result.status)
    }
}

/// A file a process overwrites with the call it is making and when that
/// started, for the test to see when a call is stuck.
final class StatusFile: Sendable {
    private let fd: Int32

    init(_ path: String) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    }

    deinit { close(fd) }

    /// Shows `call`, starting now (cut at 480 bytes).
    func show(_ call: String) {
        write("\(monotonicNanoseconds()) " + call)
    }

    /// Shows that no more calls come.
    func finish() { write("done") }

    private func write(_ text: String) {
        var bytes = Array(text.utf8.prefix(500))
        bytes += Array(repeating: UInt8(ascii: " "), count: 512 - bytes.count)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The call shown in the file at `path`; nil once finished (or before the first).
    static func read(_ path: String) -> (started: UInt64, call: String)? {
        guard let text = Syscall.text(path), let space = text.firstIndex(of: " "),
              let started = UInt64(text[..<space]) else { return nil }
        return (started, text[space...].trimmingCharacters(in: .whitespaces))
    }
}
