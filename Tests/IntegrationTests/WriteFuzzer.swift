import Foundation
import Glibc
import Testing
import TestSupport

/// The write fuzzer of one mounted machine: rounds of seeded writes to
/// every writable file, with fault injection between them, each round
/// followed by every invariant of `expectMachineInvariants`.
///
/// A round: the files with a write bit are listed again (removals and
/// rescans change them); the first writes run with no fault armed and the
/// state is dumped around each, so that a store that fails must leave it as
/// it was; then writes and `ctl inject` steps interleave. Every call runs
/// under the watchdog's bound. The choices depend only on the seed and on
/// what the mount answered before, so a seed replays a run (the time only
/// decides where it stops; faults armed with a probability are drawn by
/// the server).
struct WriteFuzzer {
    struct Settings {
        var seed: UInt64
        var seconds: Double
        /// The longest any one call may take.
        var bound: Duration
        var writesPerRound = 1000
        /// Writes at the start of a round with the state dumped around them.
        var observedWrites = 6
        /// Of the other writes, one in this many is an injection step instead.
        var injectionEvery: UInt64 = 25
        /// A file that gets one line per step and outcome, to read a run back.
        var log: String?
    }

    /// What a run did.
    struct Summary: CustomStringConvertible {
        var machine: String
        var seed: UInt64
        var writes = 0
        var injections = 0
        var rounds = 0
        /// Calls that hung on a known bug (the server was killed and mounted again).
        /// Outcome ("ok", "EINVAL", ...) → how many writes ended so.
        var outcomes: [String: Int] = [:]
        var overBound: [String] = []

        var description: String {
            let histogram = outcomes.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) \($0.value)" }
            return "write fuzz \(machine) (IOMMUFS_FUZZ_SEED=\(seed)): \(writes) writes, \(injections) injections, "
                + "\(rounds) rounds; outcomes: \(histogram.joined(separator: ", ")); "
                + "calls over the bound: \(overBound.count)\(overBound.isEmpty ? "" : " \(overBound.prefix(10))")"
        }
    }

    let machine: String
    let settings: Settings
    private var random: SplitMix64
    private var words = FuzzVocabulary()
    private var summary: Summary
    private let log: UnsafeMutablePointer<FILE>?

    init(machine: String, settings: Settings) {
        self.machine = machine
        self.settings = settings
        // Each machine draws its own sequence from the one seed.
        random = SplitMix64(seed: settings.seed ^ machine.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 })
        summary = Summary(machine: machine, seed: settings.seed)
        log = settings.log.flatMap { fopen($0 + "." + machine, "w") }
    }

    /// A line in the step log.
    private func note(_ line: @autoclosure () -> String) {
        guard let log else { return }
        fputs(line() + "\n", log)
        fflush(log)
    }

    /// Mounts the machine and fuzzes it for the settings' time.
    mutating func run() throws -> Summary {
        var m = try MountedMachine.start(arguments: ["--machine", machine])
        let watchdog = SyscallWatchdog(m, bound: settings.bound)
        defer {
            watchdog.stop()
            m.stop()
            if let log { fclose(log) }
        }
        let deadline = Date().addingTimeInterval(settings.seconds)
        fuzzing: repeat {
            summary.rounds += 1
            note("round \(summary.rounds)")
            var end = round(m, watchdog, until: deadline)
            if end == .done { end = check(m, watchdog) }
            switch end {
            case .done:
                continue
            case .stop:
                break fuzzing
            }
        } while Date() < deadline
        summary.overBound = watchdog.overBound
        return summary
    }

    private enum RoundEnd {
        /// Go on.
        case done
        /// Something failed that ends the run.
        case stop
    }

    private mutating func round(_ m: MountedMachine, _ watchdog: SyscallWatchdog, until deadline: Date) -> RoundEnd {
        words.learn(from: m)
        let files = Dictionary(grouping: writableFiles(m), by: { String($0.split(separator: "/").last!) })
        let names = files.keys.sorted()
        guard !names.isEmpty else {
            Issue.record("no writable file in the mount of \(machine)")
            return .stop
        }
        for step in 0..<settings.writesPerRound where Date() < deadline {
            var outcome = Syscall.Outcome.ok(0)
            if step >= settings.observedWrites && random.next() % settings.injectionEvery == 0 {
                inject(m, watchdog)
            } else {
                outcome = write(to: random.pick(files[random.pick(names)]!), in: m, watchdog, observed: step < settings.observedWrites)
            }
            if let end = stepEnded(m, watchdog) { return end }
            // (These errnos can also be injected ones.)
            if case .failed(let e) = outcome, [ENOTCONN, ECONNABORTED].contains(e), case .failed = listOutcome(m.root) {
                Issue.record("the mount of \(machine) answers \(errnoName(e)), its server running: \(m.serverLog.suffix(4000))")
                return .stop
            }
        }
        return .done
    }

    /// The invariants after a round (and a repair of issue 10's bug 2).
    private func check(_ m: MountedMachine, _ watchdog: SyscallWatchdog) -> RoundEnd {
        let checks = "the invariant checks after round \(summary.rounds)"
        do {
            try watchdog.time(checks, bound: .seconds(120)) {
                try expectMachineInvariants(m)
            }
        } catch {
            Issue.record(error, Comment(rawValue: checks))
            return .stop
        }
        return stepEnded(m, watchdog) ?? .done
    }

    /// A hang (the server was killed to end it) or a dead server.
    private func stepEnded(_ m: MountedMachine, _ watchdog: SyscallWatchdog) -> RoundEnd? {
        if let hang = watchdog.takeHang() {
            hang.record()
            return .stop
        }
        var status: Int32?
        guard m.server.isRunning(exitStatus: &status) else {
            Issue.record("the server of \(machine) exited (\(status ?? -1)): \(m.serverLog.suffix(4000))")
            return .stop
        }
        return nil
    }

    /// One `ctl inject` step, which the server takes or refuses as its rules say.
    private mutating func inject(_ m: MountedMachine, _ watchdog: SyscallWatchdog) {
        let arguments = RandomFault.arguments(&random)
        let result = watchdog.time("ctl \(arguments.joined(separator: " "))") { m.ctl(arguments) }
        if RandomFault.isRefused(arguments) {
            #expect(result.status == 1 && result.stderr.hasPrefix("iommufs: EINVAL: "), "ctl \(arguments.joined(separator: " ")): \(result.stderr)")
        } else {
            #expect(result.status == 0, "ctl \(arguments.joined(separator: " ")): \(result.stderr)")
        }
        note("ctl \(arguments.joined(separator: " ")): \(result.status)")
        summary.injections += 1
    }

    /// One fuzzed write to `path`; with `observed`, a failed one must leave
    /// the dumped state as it was.
    private mutating func write(to path: String, in m: MountedMachine, _ watchdog: SyscallWatchdog, observed: Bool) -> Syscall.Outcome {
        let binary = path.hasSuffix("/config")
        let payload = binary ? FuzzPayload.binary(&random) : FuzzPayload.next(&random, words)
        let style = binary ? .at(offset: random.pick([0, 1, 6, 63, 255, 256, 4095, 4096])) : WriteStyle.next(&random)
        let what = "\(style) write of \(payload.count) bytes \(Self.quoted(payload)) to \(path)"
        let before = observed ? watchdog.time("ctl dump") { m.ctl("dump") } : nil
        let outcome = watchdog.time(what) { style.perform(path, payload) }
        summary.writes += style.writes
        let name = switch outcome {
        case .ok: "ok"
        case .failed(let e): errnoName(e)
        }
        summary.outcomes[name, default: 0] += 1
        note("\(what): \(name)")
        // (Of a split write, the first part may have done its work.)
        if let before, case .failed = outcome, style.writes == 1 {
            let after = watchdog.time("ctl dump") { m.ctl("dump") }
            #expect(before.status == 0 && after.stdout == before.stdout, "\(what) failed (\(name)) and changed the state")
        }
        return outcome
    }

    /// Every regular file with a write bit, found without following links.
    private func writableFiles(_ m: MountedMachine) -> [String] {
        var files: [String] = []
        func walk(_ path: String) {
            guard let st = Syscall.lstat(path) else { return }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: for entry in Syscall.list(path) { walk(path + "/" + entry) }
            case S_IFREG where st.st_mode & 0o222 != 0: files.append(path)
            default: break
            }
        }
        walk(m.root)
        // Not modelled: hot-removing the PCI function that is an IOMMU unit
        // (AMD-Vi) takes the unit's class device with it, and every device
        // behind the unit keeps an `iommu` link to it.
        let unitFunctions = Set(Syscall.list(m.path("class/iommu")).compactMap { unit -> String? in
            let target = Syscall.readlink(m.path("class/iommu/" + unit)) ?? ""
            return target.hasPrefix("../../devices/pci") ? m.path(String(target.dropFirst(6).split(separator: "/iommu/").first!)) : nil
        })
        return files.filter { !($0.hasSuffix("/remove") && unitFunctions.contains(String($0.dropLast(7)))) }.sorted()
    }

    /// The payload as a Swift string literal would spell it, cut at 80 bytes.
    static func quoted(_ payload: [UInt8]) -> String {
        let shown = payload.prefix(80).map { byte -> String in
            switch byte {
            case 0x0a: "\\n"
            case 0x09: "\\t"
            case 0x22: "\\\""
            case 0x5c: "\\\\"
            case 0x20..<0x7f: String(UnicodeScalar(byte))
            default: "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
        }
        return "\"" + shown.joined() + "\"" + (payload.count > 80 ? "…" : "")
    }
}

/// How a program hands a payload to a store.
enum WriteStyle: CustomStringConvertible {
    /// open(O_WRONLY), one write(2), close: what `echo` does.
    case plain
    /// One pwrite(2) at the offset.
    case at(offset: Int)
    /// Two write(2)s on one open file, split at the index.
    case split(at: Int)
    /// open with these flags, one write(2).
    case opened(flags: Int32)

    static func next(_ random: inout SplitMix64) -> WriteStyle {
        switch random.next() % 20 {
        case 0: .at(offset: random.pick([1, 7, 4095, 4096, 1 << 20]))
        case 1: .split(at: Int(random.next() % 8))
        case 2: .opened(flags: O_RDWR)
        case 3: .opened(flags: O_WRONLY | O_APPEND)
        case 4: .opened(flags: O_WRONLY | O_TRUNC)
        default: .plain
        }
    }

    /// How many write(2)s it makes.
    var writes: Int {
        if case .split = self { 2 } else { 1 }
    }

    var description: String {
        switch self {
        case .plain: "a"
        case .at(let offset): "a pwrite at \(offset):"
        case .split(let index): "a split (at \(index))"
        case .opened(let flags): "an open(\(flags == O_RDWR ? "O_RDWR" : flags & O_APPEND != 0 ? "O_APPEND" : "O_TRUNC"))"
        }
    }

    /// Writes `payload` to `path`; the first failure's errno.
    func perform(_ path: String, _ payload: [UInt8]) -> Syscall.Outcome {
        switch self {
        case .plain: return Syscall.write(path, payload)
        case .at(let offset): return Syscall.write(path, payload, offset: offset)
        case .opened(let flags): return Syscall.write(path, payload, flags: flags)
        case .split(let index):
            let fd = open(path, O_WRONLY)
            guard fd >= 0 else { return .failed(errno) }
            defer { close(fd) }
            let cut = min(index, payload.count)
            var total = 0
            for part in [payload[..<cut], payload[cut...]] {
                let n = part.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 { return .failed(errno) }
                total += n
            }
            return .ok(total)
        }
    }
}
