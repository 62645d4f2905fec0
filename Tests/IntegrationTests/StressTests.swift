import Foundation
import Glibc
import Testing
import TestSupport

/// Twenty seconds of everything at once through one mount: type writes,
/// bind/unbind, drivers_probe, remove/rescan, resets, readdirs and
/// readlinks from several threads. Every call must answer as a kernel could
/// (success, EPERM, EINVAL, EBUSY, ENODEV or ENOENT), none may hang or see
/// EIO/ENOTCONN, and the tree must be consistent afterwards.
@Suite("Stress") struct StressTests {
    typealias D = DefaultPCI
    static let duration = 20.0
    static let kernelErrnos: Set<Int32> = [EPERM, EINVAL, EBUSY, ENODEV, ENOENT]
    /// Longest a single call may take: a remove waits at most for a 100 ms reset.
    static let slowCall = 5.0

    @Test("20 s of concurrent driver, hot-plug, reset and type traffic")
    func mixedTraffic() throws {
        try MountedMachine.with { m in
            let pci = SysfsPCI(m)
            let record = CallRecord()
            let deadline = Date().addingTimeInterval(Self.duration)
            let done = DispatchGroup()
            for (index, worker) in Self.workers(pci).enumerated() {
                done.enter()
                let thread = Thread {
                    var random = SplitMix64(seed: UInt64(index + 1))
                    while Date() < deadline { worker(&random, record) }
                    done.leave()
                }
                thread.start()
            }
            if done.wait(timeout: .now() + Self.duration + 60) == .timedOut {
                Issue.record("a call hung for a minute; killing the server. \(record.summary)\n\(m.serverLog.suffix(2000))")
                kill(m.server.pid, SIGKILL)
                done.wait()
            }
            #expect(record.unexpected == [], "\(record.summary)")
            #expect(record.slowest < Self.slowCall, "slowest call: \(record.slowestCall) took \(record.slowest) s")
            #expect(record.count > 2000, "\(record.summary)")
            // Every kind of change happened at least once.
            for kind in ["type ok", "type EBUSY", "bind ok", "unbind ok", "drivers_probe ok", "remove ok", "rescan ok", "reset ok"] {
                #expect(record.kinds.contains(kind), "never: \(kind). \(record.summary)")
            }

            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.devices() == D.bootDevices)
            #expect(Set(pci.groupIDs()) == Set(D.bootGroups.keys))
            #expect(pci.groupMap() == D.bootGroups)
            expectConsistentTree(m)
            #expect(!m.serverLog.contains("could not"), "\(m.serverLog.suffix(2000))")
        }
    }

    typealias Worker = @Sendable (inout SplitMix64, CallRecord) -> Void

    /// One thread per entry.
    static func workers(_ pci: SysfsPCI) -> [Worker] {
        let typeWriter: Worker = { random, record in
            let group = random.pick([3, 4, 6])
            let word = random.pick(["identity", "DMA", "DMA-FQ", "auto", "bogus"])
            record.call("type") { Syscall.write(pci.type(group), word) }
        }
        return [
            typeWriter,
            typeWriter,
            // bind / unbind of the two drivers that use the DMA API
            { random, record in
                let (driver, bdf) = random.pick([("nvme", D.nvme), ("8139too", D.rtl8139)])
                let knob = random.pick(["bind", "unbind"])
                record.call(knob) { Syscall.write(pci.driverKnob(driver, knob), bdf) }
            },
            { random, record in
                let bdf = random.pick([D.nvme, D.rtl8139, D.usbOHCI])
                record.call("drivers_probe") { Syscall.write(pci.driversProbe, bdf) }
            },
            // remove and rescan
            { random, record in
                if random.next() % 3 == 0 {
                    record.call("rescan") { Syscall.write(pci.rescan, "1") }
                } else {
                    let bdf = random.pick([D.nvme, D.usbOHCI])
                    record.call("remove") { Syscall.write(pci.device(bdf, "remove"), "1") }
                }
                usleep(UInt32(random.next() % 20_000))
            },
            { random, record in
                let bdf = random.pick([D.nic, D.nic, D.nvme])
                record.call("reset") { Syscall.write(pci.device(bdf, "reset"), "1") }
            },
            // readers
            { random, record in
                let dir = random.pick([
                    "kernel/iommu_groups", "kernel/iommu_groups/3/devices", "kernel/iommu_groups/6/devices",
                    "bus/pci/devices", "bus/pci/drivers/nvme", "devices/pci0000:00/0000:00:1c.0",
                    "devices/pci0000:00/0000:00:1e.0", "bus/pci/devices/\(D.nvme)",
                ])
                record.call("readdir") { listOutcome(pci.m.path(dir)) }
                let group = random.pick([3, 4, 6])
                record.call("read") {
                    switch Syscall.read(pci.type(group)) {
                    case .success(let text): .ok(text.utf8.count)
                    case .failure(let e): .failed(e.code)
                    }
                }
            },
            { random, record in
                let bdf = random.pick([D.nvme, D.rtl8139, D.usbOHCI, D.nic])
                let link = random.pick(["iommu_group", "driver", "subsystem", "iommu"])
                record.call("readlink") { readlinkOutcome(pci.device(bdf, link)) }
            },
        ]
    }

}

/// What the stress workers saw: counts per kind and result, calls that
/// answered with an errno no kernel store gives, the slowest call.
final class CallRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var tally: [String: Int] = [:]
    private var odd: [String] = []
    private var slowestTime = 0.0
    private var slowestName = ""

    /// Runs one call and files its outcome under `kind`.
    func call(_ kind: String, _ body: () -> Syscall.Outcome) {
        let start = Date()
        let outcome = body()
        let elapsed = Date().timeIntervalSince(start)
        let result: String
        switch outcome {
        case .ok: result = "ok"
        case .failed(let e): result = errnoName(e)
        }
        lock.lock(); defer { lock.unlock() }
        tally[kind + " " + result, default: 0] += 1
        if case .failed(let e) = outcome, !StressTests.kernelErrnos.contains(e), odd.count < 50 {
            odd.append("\(kind): \(result)")
        }
        if elapsed > slowestTime { (slowestTime, slowestName) = (elapsed, kind) }
    }

    var unexpected: [String] { lock.lock(); defer { lock.unlock() }; return odd }
    var kinds: Set<String> { lock.lock(); defer { lock.unlock() }; return Set(tally.keys) }
    var count: Int { lock.lock(); defer { lock.unlock() }; return tally.values.reduce(0, +) }
    var slowest: Double { lock.lock(); defer { lock.unlock() }; return slowestTime }
    var slowestCall: String { lock.lock(); defer { lock.unlock() }; return slowestName }
    var summary: String {
        lock.lock(); defer { lock.unlock() }
        return tally.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
    }
}

func errnoName(_ e: Int32) -> String {
    let names: [Int32: String] = [EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EACCES: "EACCES",
                                  EBUSY: "EBUSY", ENODEV: "ENODEV", EINVAL: "EINVAL", ERANGE: "ERANGE",
                                  ENOTCONN: "ENOTCONN", EINTR: "EINTR", ENOSYS: "ENOSYS"]
    return names[e] ?? "errno \(e)"
}

/// opendir + readdir to the end, with the errno of whichever failed.
func listOutcome(_ path: String) -> Syscall.Outcome {
    guard let dir = opendir(path) else { return .failed(errno) }
    defer { closedir(dir) }
    var count = 0
    while true {
        errno = 0
        guard readdir(dir) != nil else { return errno == 0 ? .ok(count) : .failed(errno) }
        count += 1
    }
}

func readlinkOutcome(_ path: String) -> Syscall.Outcome {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink(path, &buffer, buffer.count - 1)
    return n < 0 ? .failed(errno) : .ok(n)
}

// MARK: - The consistency of a quiet tree

/// What holds in any state the tree can be in once nothing changes it:
/// every link resolves inside the mount; every device is in exactly one
/// group's `devices/` (none only if its IOMMU probe failed, with no `iommu`
/// link) and its `iommu_group` link names that group; group
/// directories are non-empty; a device's `driver` link and its driver's
/// directory agree.
///
/// Waits out the kernel's 1 s entry cache first, so that what is checked is
/// the server's tree and not a dentry cached before the last change (the
/// tests that check visibility "at once" do so explicitly).
func expectConsistentTree(_ m: MountedMachine, sourceLocation: SourceLocation = #_sourceLocation) {
    usleep(1_100_000)
    let pci = SysfsPCI(m)

    var links = 0
    func walk(_ path: String) {
        guard let st = Syscall.lstat(path) else {
            Issue.record("lstat \(path) failed", sourceLocation: sourceLocation)
            return
        }
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            for entry in Syscall.list(path) { walk(path + "/" + entry) }
        case S_IFLNK:
            links += 1
            guard let target = Syscall.readlink(path) else {
                Issue.record("readlink \(path) failed", sourceLocation: sourceLocation)
                return
            }
            let resolved = URL(fileURLWithPath: (path as NSString).deletingLastPathComponent)
                .appendingPathComponent(target).standardized.path
            #expect(resolved.hasPrefix(m.root + "/"), "\(path) → \(target) leaves the mount", sourceLocation: sourceLocation)
            #expect(Syscall.lstat(resolved) != nil, "\(path) → \(target) dangles", sourceLocation: sourceLocation)
        default:
            break
        }
    }
    walk(m.root)
    #expect(links > 60, sourceLocation: sourceLocation)

    let groupNames = Syscall.list(m.path("kernel/iommu_groups"))
    #expect(Set(groupNames).count == groupNames.count, "duplicate group entries \(groupNames)", sourceLocation: sourceLocation)
    var membership: [String: [Int]] = [:]
    for name in groupNames {
        guard let id = Int(name), String(id) == name else {
            Issue.record("group directory \(name.debugDescription)", sourceLocation: sourceLocation)
            continue
        }
        let members = pci.members(id)
        #expect(!members.isEmpty, "group \(id) is empty", sourceLocation: sourceLocation)
        for member in members { membership[member, default: []].append(id) }
        // A VFIO no-IOMMU group has no default domain.
        let types = Syscall.text(m.path("kernel/iommu_groups/\(id)/name")) == "vfio-noiommu\n" ? ["unknown"] : ["DMA", "DMA-FQ", "identity"]
        #expect(types.contains(pci.typeText(id) ?? "?"), "group \(id) type", sourceLocation: sourceLocation)
    }
    let devices = pci.devices()
    #expect(Set(membership.keys).isSubset(of: devices), "group members vs bus/pci/devices", sourceLocation: sourceLocation)
    for device in devices {
        let groups = membership[device] ?? []
        // Only a device whose IOMMU probe failed (no `iommu` link) is in no group.
        let translated = Syscall.readlink(pci.device(device, "iommu")) != nil
        #expect(groups.count == 1 || (groups.isEmpty && !translated), "\(device) is in groups \(groups)", sourceLocation: sourceLocation)
        #expect(pci.group(of: device) == groups.first, "\(device)'s iommu_group link", sourceLocation: sourceLocation)
    }

    let drivers = Syscall.list(m.path("bus/pci/drivers"))
    var boundTo: [String: [String]] = [:]
    for driver in drivers {
        for device in pci.bound(to: driver) { boundTo[device, default: []].append(driver) }
    }
    for device in devices {
        let link = pci.driverLink(of: device)
        let listed = boundTo[device] ?? []
        #expect(listed.count <= 1, "\(device) listed by drivers \(listed)", sourceLocation: sourceLocation)
        #expect(link.flatMap { $0.split(separator: "/").last.map(String.init) } == listed.first,
                "\(device): driver link \(link ?? "none"), listed by \(listed)", sourceLocation: sourceLocation)
        #expect(link.map { $0.contains("/bus/pci/drivers/") } ?? true, "\(device): driver link \(link ?? "")",
                sourceLocation: sourceLocation)
    }
}
