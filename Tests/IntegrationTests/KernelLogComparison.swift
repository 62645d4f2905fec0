import Foundation
import Glibc
import Testing
import Topology

/// Compares the kernel messages of each transcript step (`kmsg:` lines, the
/// guest's `dmesg -c` after the step) with the lines iommufs logged for the
/// same step (`dmesg` with `clear` on the control socket).
///
/// Every transcript line is classified by who printed it. Lines of the
/// IOMMU core and of the PCI core paths the model implements must be
/// printed by iommufs at that step, in the same order, and iommufs may print
/// nothing else. Lines of the guest's own device drivers and of PCI-core
/// parts the model does not have (BARs, bridge windows, slots) are skipped,
/// with the reason naming that class.
///
/// Rate limiting (`pr_err_ratelimited`, `dev_err_ratelimited`: each call
/// site allows 10 messages per 5 s, then counts the suppressed calls and
/// prints `FUNCTION: N callbacks suppressed` at the first call of the next
/// interval). The replay runs much faster than the guest did, so the two
/// limiters suppress different calls. A ratelimited line that only one side
/// printed is accepted when the other side's limiter was provably
/// suppressing that call site at that step:
/// - iommufs printed it, the guest did not: since its last suppression
///   notice of that function the guest had printed at least 10 lines of that
///   call site, and a later notice of that function in the transcript shows
///   the suppression run. In total, such lines may not outnumber the calls
///   the guest's notices of that function report as suppressed.
/// - the guest printed it, iommufs did not: iommufs's own lines (with their
///   timestamps) show 10 lines of that call site within the current 5 s
///   interval. Such a guest line is counted as skipped with the reason
///   "timing of the rate limiter".
/// The guest's notices themselves are skipped ("timing of the guest's rate
/// limiter"); iommufs's notices only feed its side of the bookkeeping.
struct KernelLogComparison {
    /// `DEFAULT_RATELIMIT_BURST` and `DEFAULT_RATELIMIT_INTERVAL`.
    static let burst = 10
    static let interval = 5.0

    private var connection: ControlConnection
    /// Per function: transcript line indexes of the guest's suppression notices.
    private let guestNotices: [String: [Int]]
    /// The guest's lines per call site since its last notice of the site's function.
    private var guestPrinted: [RatelimitedSite: Int] = [:]
    /// Lines iommufs printed that the guest's limiter suppressed, and the
    /// calls the guest's notices reported suppressed, per function.
    private var acceptedExtra: [String: Int] = [:]
    private var guestSuppressed: [String: Int] = [:]
    /// iommufs's limiter per call site as its lines show it: the start of
    /// the interval (seconds since its boot) and the lines printed in it.
    private var ours: [RatelimitedSite: (begin: Double, printed: Int)] = [:]

    /// Connects to the mount's control socket and (unless told otherwise)
    /// clears the boot log, which `BootLogConformanceTests` compares.
    init(mount: MountedMachine, lines: [TranscriptLine], clearingBootLog: Bool = true) throws {
        connection = try ControlConnection(path: mount.controlSocket)
        var notices: [String: [Int]] = [:]
        for (index, line) in lines.enumerated() where line.kind == "kmsg:" {
            if case .notice(let function) = Self.classify(Self.text(line)) { notices[function, default: []].append(index) }
        }
        guestNotices = notices
        if clearingBootLog { _ = readAndClear() }
    }

    func close() { connection.close() }

    /// After the step at `index`: its `kmsg:` lines against what iommufs
    /// logged.
    mutating func compareStep(at index: Int, of lines: [TranscriptLine], into report: inout ReplayReport) {
        func compare(_ line: TranscriptLine, _ expected: String, _ actual: String) {
            report.compare(line, expected: expected, actual: actual)
        }
        let stepLine = lines[index]
        var expected: [TranscriptLine] = []
        for line in lines[(index + 1)...].prefix(while: { $0.kind == "kmsg:" }) {
            switch Self.classify(Self.text(line)) {
            case .compared: expected.append(line)
            case .skipped(let reason): report.skip(line, reason)
            case .notice(let function):
                guestSuppressed[function, default: 0] += Self.suppressedCount(Self.text(line))
                for site in RatelimitedSite.all where site.function == function { guestPrinted[site] = 0 }
                report.skip(line, .guest("the guest's rate-limiter notice (\"callbacks suppressed\": its intervals run on the guest's clock)"))
            }
        }
        var actual: [(time: Double, text: String)] = []
        for entry in readAndClear() {
            if case .notice(let function) = Self.classify(entry.text) {
                for site in RatelimitedSite.all where site.function == function { ours[site] = nil }
            } else {
                actual.append(entry)
            }
        }
        var i = 0, j = 0
        while i < expected.count || j < actual.count {
            let e = i < expected.count ? expected[i] : nil
            let a = j < actual.count ? actual[j] : nil
            if let e, let a, Self.text(e) == a.text {
                report.compare(e, expected: a.text, actual: a.text)
                if let site = RatelimitedSite(a.text) { guestPrinted[site, default: 0] += 1; notePrinted(site, at: a.time) }
                i += 1; j += 1
            } else if let e, let site = RatelimitedSite(Self.text(e)), ours[site].map({ $0.printed >= Self.burst }) == true {
                // iommufs had printed its burst of 10 lines of this call site
                // within 5 s: the kernel's ___ratelimit suppresses the call.
                report.matchSuppressed(e)
                guestPrinted[site, default: 0] += 1
                i += 1
            } else if let a, let site = RatelimitedSite(a.text), guestIsSuppressing(site, after: index) {
                acceptedExtra[site.function, default: 0] += 1
                notePrinted(site, at: a.time)
                j += 1
            } else if let e {
                compare(e, Self.text(e), a?.text ?? "<no line from iommufs>")
                i += 1
                if a != nil { j += 1 }
            } else if let a {
                compare(stepLine, "<no kernel message>", "iommufs logged: \(a.text)")
                j += 1
            }
        }
    }

    /// The guest's `kmsg >/dev/null`: what iommufs logged since the last
    /// read is dropped, as the guest dropped its lines; the rate limiter's
    /// bookkeeping still sees iommufs's lines.
    mutating func discard() {
        for entry in readAndClear() {
            if case .notice(let function) = Self.classify(entry.text) {
                for site in RatelimitedSite.all where site.function == function { ours[site] = nil }
            } else if let site = RatelimitedSite(entry.text) {
                notePrinted(site, at: entry.time)
            }
        }
    }

    /// At the end: iommufs's lines accepted as suppressed by the guest may
    /// not outnumber the calls the guest reported suppressed.
    func finish(_ last: TranscriptLine, into report: inout ReplayReport) {
        for (function, extra) in acceptedExtra.sorted(by: { $0.key < $1.key }) {
            let reported = guestSuppressed[function, default: 0]
            if extra > reported {
                report.compare(last, expected: "at most \(reported) \(function) calls suppressed by the guest",
                               actual: "\(extra) lines iommufs printed that the guest did not")
            }
        }
    }

    private func guestIsSuppressing(_ site: RatelimitedSite, after index: Int) -> Bool {
        guestPrinted[site, default: 0] >= Self.burst && guestNotices[site.function, default: []].contains { $0 > index }
    }

    /// `___ratelimit` as seen from the lines: a line more than 5 s after
    /// the interval's start begins a new interval.
    private mutating func notePrinted(_ site: RatelimitedSite, at time: Double) {
        if let current = ours[site], time <= current.begin + Self.interval {
            ours[site] = (current.begin, current.printed + 1)
        } else {
            ours[site] = (time, 1)
        }
    }

    // MARK: classification

    enum Origin: Equatable {
        /// Printed by the IOMMU core or a PCI-core path iommufs models.
        case compared
        case skipped(SkipReason)
        /// `FUNCTION: N callbacks suppressed`.
        case notice(function: String)
    }

    /// The message without `kmsg: ` and without a `[ seconds]` timestamp.
    static func text(_ line: TranscriptLine) -> String { stripTimestamp(String(line.text.dropFirst(6))) }

    static func stripTimestamp(_ text: String) -> String {
        guard text.hasPrefix("["), let close = text.firstIndex(of: "]") else { return text }
        return String(text[text.index(after: close)...].drop { $0 == " " })
    }

    static func suppressedCount(_ text: String) -> Int {
        Int(text.split(separator: " ").dropLast(2).last ?? "") ?? 0
    }

    /// Guest drivers whose chatter (probe, link, netdev, PHC, queues) iommufs does not model.
    static let guestDrivers = ["e1000e", "e1000", "nvme", "ahci", "scsi", "virtio_blk", "virtio_net"]

    /// Messages of the IOMMU core and of the PCI-core paths iommufs
    /// models. Printed with `dev_*()`, they carry the bound driver's name,
    /// like the driver's own lines, so they are recognised first.
    static let modelledMessages = [
        ": Adding to iommu group ", ": Removing from iommu group ", ": Firmware has requested this device have a 1:1 IOMMU mapping",
        ": Device needs domain type ", ": no driver bound to device; cannot configure SR-IOV", " VFs already enabled. Disable before enabling ",
        ": driver left SR-IOV enabled after remove", ": Unsupported reset method '", ": Invalid reset method '",
        ": All device reset methods disabled by user", ": claimed by stub", ": failed to stop IOMMU for a PCI reset",
        // Resources: probe.c's reads, setup-bus.c's assignment and bridge
        // programming, pci_bus_release_busn_res.
        ": busn_res: ", ": BAR ", ": ROM [", "bridge window [", ": PCI bridge to [bus ",
    ]

    /// Who prints `text`, and so whether iommufs must print it too.
    static func classify(_ text: String) -> Origin {
        let words = text.split(separator: " ")
        if words.count == 4, words[0].hasSuffix(":"), words[2] == "callbacks", words[3] == "suppressed" {
            return .notice(function: String(words[0].dropLast()))
        }
        if RatelimitedSite(text) != nil || modelledMessages.contains(where: text.contains) { return .compared }
        let first = String(words.first ?? "")
        if first.hasPrefix("ata"), first.dropFirst(3).dropLast().allSatisfy(\.isNumber) {
            return .skipped(.guest("message of the guest's libata (SATA link) driver"))
        }
        if guestDrivers.contains(first) { return .skipped(.guest("message of the guest's \(first) driver")) }
        if first == "pcieport", text.contains(": PME: ") || text.contains(": AER: ") {
            return .skipped(.guest("message of the guest's pcieport PME/AER service drivers (interrupts)"))
        }
        if text.contains(": enabling device (") {
            return .skipped(.gap("pci_enable_resources: the PCI command register is not modelled"))
        }
        return .compared
    }

    // MARK: the control socket

    /// `{"verb":"dmesg","clear":true}`: the lines logged since the last
    /// call, with their timestamps in seconds.
    mutating func readAndClear() -> [(time: Double, text: String)] {
        guard connection.send(#"{"verb":"dmesg","clear":true}"#),
              let reply = connection.readLine(), let json = try? JSON.parse(reply),
              let lines = json["lines"]?.arrayValue else {
            return [(0, "<no reply from the control socket>")]
        }
        return lines.compactMap(\.stringValue).map { line in
            let stamp = line.dropFirst().prefix { $0 != "]" }.trimmingCharacters(in: .whitespaces)
            return (Double(stamp) ?? 0, Self.stripTimestamp(line))
        }
    }
}

/// The kernel's ratelimited log calls that the transcripts show, known by
/// their text: each has its own limiter; the notice names its function.
enum RatelimitedSite: Hashable {
    case storeTypeGroupNotSingleton, storeTypeDeviceBound
    case changeDefault(String)
    case untrustedOverride, conflictingWishes

    static let changeDefaultMessages = ["Group not assigned to default domain", "Cannot change default domain: Group has more than one device",
                                        "Cannot change default domain: Device has been changed", "Device cannot be in "]

    static let all: [RatelimitedSite] = [.storeTypeGroupNotSingleton, .storeTypeDeviceBound, .untrustedOverride, .conflictingWishes]
        + changeDefaultMessages.map { .changeDefault($0) }

    /// The call site of a line, nil if it is not ratelimited.
    init?(_ text: String) {
        switch text {
        case "iommu: Cannot change default domain: Group has more than one device": self = .storeTypeGroupNotSingleton
        case "iommu: Device is still bound to driver": self = .storeTypeDeviceBound
        default:
            // dev_err_ratelimited: `DRIVER BDF: message`.
            guard let colon = text.range(of: ": ") else { return nil }
            let message = text[colon.upperBound...]
            if let m = Self.changeDefaultMessages.first(where: { message.hasPrefix($0) }) { self = .changeDefault(m) }
            else if message.hasPrefix("Device is not trusted, but driver is overriding group") { self = .untrustedOverride }
            else if message.hasPrefix("IOMMU driver error, requesting conflicting def_domain_type") { self = .conflictingWishes }
            else { return nil }
        }
    }

    var function: String {
        switch self {
        case .storeTypeGroupNotSingleton, .storeTypeDeviceBound: "iommu_group_store_type"
        case .changeDefault: "iommu_change_dev_def_domain"
        case .untrustedOverride: "iommu_get_default_domain_type"
        case .conflictingWishes: "iommu_get_def_domain_type"
        }
    }
}

/// The boot log: `ctl dmesg` right after mounting against the boot messages
/// the guests printed (`*.dmesg.txt`). Compared are the lines whose facts
/// the model has: the IOMMU core's policy lines (`iommu: ...`), VT-d's
/// forced strict mode under virtualization, and one `Adding to iommu group`
/// per device in probe order. The rest (ACPI tables, memory zones, DMAR
/// units and remapping, SATA ports, VFIO's banner) is not modelled.
@Suite("Conformance boot log", .serialized) struct BootLogConformanceTests {
    static func isModelled(_ line: String) -> Bool {
        line.hasPrefix("iommu: ") || line == "DMAR: IOMMU batching disallowed due to virtualization"
            || line.contains(": Adding to iommu group ")
    }

    @Test("boot messages of the IOMMU core, in order, then dmesg --clear leaves nothing", arguments: OracleBoot.all)
    func bootLog(_ boot: OracleBoot) throws {
        let file = boot.name + ".dmesg.txt"
        let text = try OracleFixtures.text(file)
        let guest = text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
        let expected = guest.filter(Self.isModelled)
        let (first, second) = try boot.withMount(Transcript.parse(try OracleFixtures.text(boot.file))) { m in
            var reader = try KernelLogComparison(mount: m, lines: [], clearingBootLog: false)
            defer { reader.close() }
            return (reader.readAndClear().map(\.text), reader.readAndClear().map(\.text))
        }
        print("\(file): \(expected.count) IOMMU boot lines compared, \(guest.count - expected.count) skipped (firmware, memory, DMAR unit and driver messages the model has no facts for)")
        // The oracle's file keeps only the boot lines that mention the IOMMU
        // (not the PCI scan's, like acpiphp's slot registrations).
        #expect(first.filter { $0.lowercased().contains("iommu") || $0.contains("DMAR") } == expected)
        #expect(second.isEmpty)
    }

    @Test("ctl dmesg --clear prints each line once: the boot log, then only what a refused write logged")
    func ctlClear() throws {
        try MountedMachine.with(arguments: ["--machine", "qemu-q35-vtd", "--profile", "linux-6.1"]) { m in
            let dmesg = { run(MountedMachine.binary, ["ctl", "--mount", m.root, "dmesg", "--clear"]) }
            let boot = dmesg()
            #expect(boot.status == 0 && boot.stdout.contains("] pci 0000:08:00.0: Adding to iommu group 15\n"), "\(boot.stderr)")
            #expect(dmesg().stdout == "")
            let fd = open(m.path("kernel/iommu_groups/10/type"), O_WRONLY)
            defer { Glibc.close(fd) }
            #expect(Glibc.write(fd, "identity", 8) == -1 && errno == EBUSY)
            let lines = dmesg().stdout.split(separator: "\n").map { KernelLogComparison.stripTimestamp(String($0)) }
            #expect(lines == ["iommu: Device is still bound to driver"])
            // A plain read starts after the cleared lines too, as `dmesg` after `dmesg -c` does.
            #expect(run(MountedMachine.binary, ["ctl", "--mount", m.root, "dmesg"]).stdout == "")
        }
    }
}
