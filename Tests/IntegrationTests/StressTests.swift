import Control
import Foundation
import Glibc
import SystemPackage
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
/// answered with an errno no kernel store gives, the slowest call, how many
/// took longer than the bound.
final class CallRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var tally: [String: Int] = [:]
    private var odd: [String] = []
    private var slowestTime = 0.0
    private var slowestName = ""
    private var overBoundCount = 0
    /// The errnos a call may answer with.
    let allowed: Set<Int32>
    /// The seconds a call may take.
    let bound: Double
    /// Told each call before it runs (to show what a stuck worker was doing).
    private let announce: (@Sendable (String) -> Void)?

    init(allowed: Set<Int32> = StressTests.kernelErrnos, bound: Double = StressTests.slowCall,
         announce: (@Sendable (String) -> Void)? = nil) {
        self.allowed = allowed
        self.bound = bound
        self.announce = announce
    }

    /// Runs one call and files its outcome under `kind`; `detail` says
    /// with what (a path, a payload).
    func call(_ kind: String, _ detail: @autoclosure () -> String = "", _ body: () -> Syscall.Outcome) {
        announce?(kind + " " + detail())
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
        if case .failed(let e) = outcome, !allowed.contains(e), odd.count < 50 {
            odd.append("\(kind) \(detail()): \(result)")
        }
        if elapsed > slowestTime { (slowestTime, slowestName) = (elapsed, kind + " " + detail()) }
        if elapsed > bound { overBoundCount += 1 }
    }

    var unexpected: [String] { lock.lock(); defer { lock.unlock() }; return odd }
    var kinds: Set<String> { lock.lock(); defer { lock.unlock() }; return Set(tally.keys) }
    var count: Int { lock.lock(); defer { lock.unlock() }; return tally.values.reduce(0, +) }
    var slowest: Double { lock.lock(); defer { lock.unlock() }; return slowestTime }
    var slowestCall: String { lock.lock(); defer { lock.unlock() }; return slowestName }
    var overBound: Int { lock.lock(); defer { lock.unlock() }; return overBoundCount }
    var summary: String {
        lock.lock(); defer { lock.unlock() }
        return tally.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
    }

    /// Everything recorded, as lines another process can `absorb`.
    var report: String {
        lock.lock(); defer { lock.unlock() }
        let flat = { (text: String) in text.map { $0 == "\n" || $0 == "\t" ? " " : String($0) }.joined() }
        return (tally.map { "tally\t\($0.key)\t\($0.value)" } + odd.map { "odd\t" + flat($0) }
                + ["slowest\t\(slowestTime)\t\(flat(slowestName))", "over\t\(overBoundCount)"]).joined(separator: "\n") + "\n"
    }

    /// Adds what another process's record `report`ed.
    func absorb(_ report: String) {
        lock.lock(); defer { lock.unlock() }
        for line in report.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch (fields.first, fields.count) {
            case ("tally", 3): tally[fields[1], default: 0] += Int(fields[2]) ?? 0
            case ("odd", 2): odd.append(fields[1])
            case ("slowest", 3):
                if let time = Double(fields[1]), time > slowestTime { (slowestTime, slowestName) = (time, fields[2]) }
            case ("over", 2): overBoundCount += Int(fields[1]) ?? 0
            default: odd.append("a line of a worker's report: \(line)")
            }
        }
    }
}

/// The errno's kernel name (`EBUSY`), as `iommufs ctl` prints it.
func errnoName(_ e: Int32) -> String { SystemPackage.Errno(rawValue: e).kernelName }

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
