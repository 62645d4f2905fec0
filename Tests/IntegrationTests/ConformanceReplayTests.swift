import Foundation
import Glibc
import Testing
import Topology

/// Replays the real-kernel transcripts of `Fixtures/oracle` through a real
/// mount of a machine description built for each boot and compares every
/// observation. `make conformance` runs this suite (`swift test --filter Conformance`).
@Suite("Conformance", .serialized) struct ConformanceReplayTests {
    @Test("a real-kernel boot replayed through a mount of its machine", arguments: OracleBoot.all)
    func replay(_ boot: OracleBoot) throws {
        let lines = Transcript.parse(try OracleFixtures.text(boot.file))
        let report = try boot.withMount(lines) { m in
            var kernelLog = try KernelLogComparison(mount: m, lines: lines)
            defer { kernelLog.close() }
            if boot.isPCIScenario {
                var replay = AltPCIReplay(mount: m, lines: lines)
                replay.kernelLog = kernelLog
                replay.run()
                return replay.report
            }
            var replay = Replay(mount: m, lines: lines)
            replay.kernelLog = kernelLog
            replay.run()
            return replay.report
        }
        print(report.summary(label: boot.label))
        #expect(report.mismatches.isEmpty, "\(boot.label): \(report.mismatches.count) mismatches; first: \(report.mismatches.prefix(5).joined(separator: " | "))")
        #expect(report.coverageProblems.isEmpty, "\(boot.label): \(report.coverageProblems.joined(separator: " | "))")
    }
}

/// One recorded boot (`Fixtures/oracle/<name>.txt`) and the machine
/// description a user would write for it: the built-in machine of its
/// scenario with the transcript's kernel command line (`meta cmdline=`) and
/// the VT-d registers its tree shows. Nothing else differs between boots.
struct OracleBoot: Sendable, CustomTestStringConvertible {
    var name: String
    var file: String { name + ".txt" }
    var label: String { name.hasSuffix("-default-alt-pci") ? name.replacingOccurrences(of: "-default-alt-pci", with: " alt-pci") : name.replacingOccurrences(of: "-", with: " ") }
    var testDescription: String { label }
    var isPCIScenario: Bool { name.hasSuffix("-alt-pci") }

    static let all: [OracleBoot] = ["6.12", "6.1"].flatMap { kernel in
        ["default", "strict", "pt", "passthrough", "cmoff", "off"].map { OracleBoot(name: "\(kernel)-\($0)") }
    } + [OracleBoot(name: "6.12-default-alt-pci"), OracleBoot(name: "6.1-default-alt-pci")]

    struct Unreadable: Error, CustomStringConvertible { var description: String }

    /// Mounts the boot's machine description with its kernel's profile.
    func withMount<R>(_ lines: [TranscriptLine], _ body: (MountedMachine) throws -> R) throws -> R {
        let directory = try makeTemporaryDirectory()
        let path = directory + "/machine.json"
        try description(lines).write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path); rmdir(directory) }
        return try MountedMachine.with(arguments: ["--topology", path, "--profile", profile(lines)], body)
    }

    private static func meta(_ lines: [TranscriptLine], _ key: String) -> String? {
        lines.lazy.filter { $0.kind == "meta" && $0.text.hasPrefix("meta \(key)=") }.first.map { String($0.text.dropFirst(6 + key.count)) }
    }

    /// `--profile`: the kernel release's major.minor (`meta krel=6.12.95+deb12-amd64`).
    func profile(_ lines: [TranscriptLine]) throws -> String {
        guard let release = Self.meta(lines, "krel") else { throw Unreadable(description: "\(file): no meta krel= line") }
        return "linux-" + release.split(separator: ".").prefix(2).joined(separator: ".")
    }

    /// The machine description: the scenario's built-in machine
    /// (`meta machine=alt`: `qemu-q35-alt`), its `kernel.command_line` the
    /// transcript's, its unit's `cap`/`ecap` the ones `intel-iommu/` shows.
    func description(_ lines: [TranscriptLine]) throws -> String {
        guard let commandLine = Self.meta(lines, "cmdline") else { throw Unreadable(description: "\(file): no meta cmdline= line") }
        let builtin = Self.meta(lines, "machine")?.hasPrefix("alt") == true ? Topology.qemuQ35AltJSON : Topology.qemuQ35VTdJSON
        var registers: [String: String] = [:]
        for line in lines where line.kind == "node" {
            guard let path = line.fields["path"], let content = line.fields["content"],
                  let name = ["cap", "ecap"].first(where: { path.hasSuffix("/intel-iommu/\($0)") }) else { continue }
            registers[name] = "0x" + String(decoding: Transcript.unescape(content), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var json = try JSON.parse(Array(builtin.utf8))
        json = json.replacing(["kernel", "command_line"], with: .string(commandLine))
        for (name, value) in registers { json = json.replacing(["iommu_units", "*", "registers", name], with: .string(value)) }
        return json.prettyText
    }
}

extension JSON {
    /// The value with the member at `path` replaced (`*`: every element of an array).
    func replacing(_ path: [String], with value: JSON) -> JSON {
        guard let key = path.first else { return value }
        let rest = Array(path.dropFirst())
        switch self {
        case .object(let members):
            return .object(members.map { $0.key == key ? JSON.Member(key, $0.value.replacing(rest, with: value)) : $0 })
        case .array(let elements) where key == "*":
            return .array(elements.map { $0.replacing(rest, with: value) })
        default:
            return self
        }
    }
}

/// What both replays share: the report, the mount, the line being replayed
/// and the `ls -lan` listing being compared with `ls-la` lines.
protocol TranscriptReplay {
    var mount: MountedMachine { get }
    var lines: [TranscriptLine] { get }
    var index: Int { get }
    var report: ReplayReport { get set }
    var lsLaReplay: LsLaReplay { get set }
}

extension TranscriptReplay {
    mutating func skip(_ line: TranscriptLine, _ reason: SkipReason) { report.skip(line, reason) }

    mutating func compare(_ line: TranscriptLine, expected: String, actual: String) {
        report.compare(line, expected: expected, actual: actual)
    }

    /// `relative` under the mount.
    func p(_ relative: String) -> String { mount.path(relative) }

    mutating func lsLa(_ line: TranscriptLine) {
        let observed = lsLaReplay.observe(lines, at: index, on: mount)
        compare(line, expected: observed.expected, actual: observed.actual)
    }

    /// One write by a process with fewer privileges, opening the file
    /// itself (`afterOpen` false) or inheriting a descriptor root opened.
    func privWrite(_ path: String, _ data: String, setpriv: [String], afterOpen: Bool) -> String {
        let printf = #"printf %s "$2" >&3 || exit 102"#
        let script: String
        if afterOpen {
            script = "exec 3>>\"$1\" || exit 101; /usr/bin/setpriv \(setpriv.joined(separator: " ")) /bin/bash -c '\(printf)' _ \"$1\" \"$2\""
        } else {
            script = "/usr/bin/setpriv \(setpriv.joined(separator: " ")) /bin/bash -c 'exec 3>>\"$1\" || exit 101; \(printf)' _ \"$1\" \"$2\""
        }
        let out = IntegrationTests.run("/bin/bash", ["-c", script, "_", path, data])
        let name = ErrnoName.fromMessage(out.stderr) ?? "?(\(out.stderr))"
        switch out.status {
        case 0: return "ok \(data.utf8.count)"
        case 101: return "err \(name)@open"
        case 102: return "err \(name)"
        default: return "exit \(out.status): \(out.stderr)"
        }
    }
}

/// Performs each transcript step on the mount, in order, keeping the
/// machine in the state the guest was in.
struct Replay: TranscriptReplay {
    let mount: MountedMachine
    let lines: [TranscriptLine]
    var report = ReplayReport()
    private(set) var index = 0
    /// The group a `vfio case=` line names: the target of `vfiohold` steps.
    private var vfioGroup: String?
    /// How many `vfiohold` users have opened a container (each its own).
    private var vfioHolds = 0
    /// What the last `group-get-status` step printed (`viable=1 container_set=0`).
    private var vfioStatus: String?
    /// The last device unbound: the privileges section works on its group.
    private var lastUnbound: String?
    /// Whether the silent `type` reset before the privilege cases ran.
    private var privilegesStarted = false
    /// Devices `settype` unbound, with their drivers, to be rebound by the `rebound:` line.
    private var settypeUnbound: [(String, String)] = []
    /// Compares each step's `kmsg:` lines; nil: they are skipped.
    var kernelLog: KernelLogComparison?
    /// The `ls -lan` listing being compared with `ls-la` lines.
    var lsLaReplay = LsLaReplay()

    init(mount: MountedMachine, lines: [TranscriptLine]) {
        self.mount = mount
        self.lines = lines
    }

    /// Replays one line alone (the alt-pci replay lends it `node`, `link`,
    /// `write` and `final` lines, whose handling needs no earlier state).
    static func single(_ line: TranscriptLine, on mount: MountedMachine, into report: inout ReplayReport) {
        var replay = Replay(mount: mount, lines: [line])
        replay.run()
        report.merge(replay.report)
    }

    mutating func run() {
        while index < lines.count {
            let line = lines[index]
            report.note(line)
            step(line)
            if line.kind != "kmsg:" && guestReadsKernelLog(after: line) { kernelLog?.compareStep(at: index, of: lines, into: &report) }
            // settype's `kmsg >/dev/null`: the guest discarded what its
            // unbinds, write and binds logged.
            if line.kind == "settype", line.text.contains(" rebound:") { kernelLog?.discard() }
            index += 1
        }
        kernelLog?.finish(lines.last!, into: &report)
    }

    /// Whether scenario.sh runs `kmsg` after printing `line`: not after
    /// `settype` (its log is discarded after the `rebound:` line) nor after
    /// `override` (the next step's `kmsg` shows what it logged).
    private func guestReadsKernelLog(after line: TranscriptLine) -> Bool {
        line.kind != "settype" && line.kind != "override"
    }

    /// The guest's `unbind DEV >/dev/null` and `bind DEV DRV >/dev/null`:
    /// the step, its line and its `kmsg` all discarded.
    private mutating func silently(_ action: (inout Self) -> Void) {
        action(&self)
        kernelLog?.discard()
    }

    // MARK: the mount

    private func typePath(_ group: String) -> String { p("kernel/iommu_groups/\(group)/type") }

    private func type(_ group: String) -> String { mount.typeAsTranscribed(group) }

    private func driver(_ device: String) -> String {
        Syscall.readlink(p("bus/pci/devices/\(device)/driver")).map { String($0.split(separator: "/").last!) } ?? "none"
    }

    /// scenario.sh's `grp`: `basename "$(readlink …/iommu_group)"`, empty
    /// for a device without a group.
    private func group(of device: String) -> String {
        Syscall.readlink(p("bus/pci/devices/\(device)/iommu_group")).map { String($0.split(separator: "/").last!) } ?? ""
    }

    private func members(_ group: String) -> [String] {
        Syscall.list(p("kernel/iommu_groups/\(group)/devices")).sorted()
    }

    private func text(_ path: String) -> String {
        let t = Syscall.text(path) ?? "<unreadable>"
        return t.hasSuffix("\n") ? String(t.dropLast()) : t
    }

    /// `ok N`, `ok N short len=L`, `err E` or `err E@open`, as sysw prints one write(2).
    private func outcome(_ result: Syscall.Outcome, length: Int) -> String {
        switch result {
        case .ok(let n): n < length ? "ok \(n) short len=\(length)" : "ok \(n)"
        case .failed(let e): "err \(ErrnoName.name(e))"
        }
    }

    /// One open + one write(2) + close, with the open's failure marked `@open`.
    private func sysw(_ path: String, _ bytes: [UInt8], flags: Int32 = O_WRONLY, offset: Int? = nil) -> String {
        let fd = open(path, flags)
        guard fd >= 0 else { return "err \(ErrnoName.name(errno))@open" }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { b in
            offset.map { pwrite(fd, b.baseAddress, b.count, off_t($0)) } ?? Glibc.write(fd, b.baseAddress, b.count)
        }
        return outcome(n < 0 ? .failed(errno) : .ok(n), length: bytes.count)
    }

    private func writeText(_ path: String, _ text: String) -> String { sysw(path, Array(text.utf8)) }

    // MARK: steps

    private mutating func step(_ line: TranscriptLine) {
        let f = line.fields
        switch line.kind {
        case "meta", "modload": skip(line, .guest("describes the guest boot"))
        case "kmsg:": break  // compared after the step that printed it
        case "ls-la": lsLa(line)
        case "check": skip(line, .guest("a real DMA check in the guest (netdev up/down, NVMe live)"))
        case "readdir":
            let observed = ReaddirOrder.observe(line, on: mount)
            compare(line, expected: observed.expected, actual: observed.actual)
        case "link": link(line)
        case "misc": misc(line)
        case "topology":
            let dev = f["bdf"]!
            compare(line, expected: "vendor=\(f["vendor"]!) device=\(f["device"]!) class=\(f["class"]!)",
                    actual: "vendor=\(text(p("bus/pci/devices/\(dev)/vendor"))) device=\(text(p("bus/pci/devices/\(dev)/device"))) class=\(text(p("bus/pci/devices/\(dev)/class")))")
        case "pcidev":
            let dev = String(line.text.split(separator: " ")[1])
            let expected = line.text.split(separator: " ").dropFirst(2).joined(separator: " ")
            let actual = "vendor=\(text(p("bus/pci/devices/\(dev)/vendor"))) device=\(text(p("bus/pci/devices/\(dev)/device"))) class=\(text(p("bus/pci/devices/\(dev)/class"))) driver=\(driver(dev)) group=\(group(of: dev)) driver_override=\(text(p("bus/pci/devices/\(dev)/driver_override")))"
            compare(line, expected: expected, actual: actual)
        case "group":
            let g = String(line.text.split(separator: " ")[1])
            compare(line, expected: "type=\(f["type"]!) devices=\(line.text.components(separatedBy: "devices=")[1])",
                    actual: "type=\(type(g)) devices=\(members(g).joined(separator: " "))")
        case "group-begin":
            let g = f["group"]!
            compare(line, expected: "devices=\(f["devices"]!) type=\(f["type"]!)",
                    actual: "devices=\(members(g).joined(separator: ",")) type=\(type(g))")
        case "group-end", "final":
            let g = f["group"]!
            compare(line, expected: "type=\(f["type"]!) drivers=\(f["drivers"]!)",
                    actual: "type=\(type(g)) drivers=\(members(g).map { "\($0)=\(driver($0))," }.joined())")
        case "trans-final":
            let g = f["group"]!
            let dev = members(g).first!
            compare(line, expected: "type=\(f["type"]!) driver=\(f["driver"]!)", actual: "type=\(type(g)) driver=\(driver(dev))")
        case "node": node(line)
        case "read": read(line)
        case "write": write(line)
        case "trans-setup": transSetup(line)
        case "trans":
            let g = f["group"]!
            // `[ $st = bound ] && bind $NIC1 e1000e >/dev/null && kmsg >/dev/null`
            // ran after the setup's kmsg.
            if f["state"] == "bound" {
                let dev = f["dev"]!
                silently { $0.bindQuietly(dev, "e1000e") }
            }
            compare(line, expected: line.result!, actual: writeText(typePath(g), f["to"]!) + "; type=\(type(g))")
        case "rebind-set":
            let g = f["group"]!
            compare(line, expected: line.result!, actual: writeText(typePath(g), f["type"]!) + "; type=\(type(g))")
        case "settype": settype(line)
        case "bind":
            let dev = f["dev"]!, drv = f["driver"]!
            if line.section == "transitions" {
                // After the matrix: `unbind $NIC1 >/dev/null; sysw $G/$g/type auto >/dev/null`.
                silently { $0.unbindQuietly(dev) }
                _ = writeText(typePath(group(of: dev)), "auto")
            }
            let r = writeText(p("bus/pci/drivers/\(drv)/bind"), dev)
            compare(line, expected: line.result!, actual: "\(r); driver=\(driver(dev)); type=\(type(group(of: dev)))")
        case "unbind":
            let dev = f["dev"]!, drv = f["driver"]!
            let r = writeText(p("bus/pci/drivers/\(drv)/unbind"), dev)
            lastUnbound = dev
            compare(line, expected: line.result!, actual: "\(r); driver=\(driver(dev))")
        case "override":
            let dev = f["dev"]!
            let data = line.step.hasSuffix(" clear") ? "\n" : "vfio-pci"
            let r = writeText(p("bus/pci/devices/\(dev)/driver_override"), data)
            compare(line, expected: line.result!, actual: "\(r); driver_override=\(text(p("bus/pci/devices/\(dev)/driver_override")))")
        case "probe":
            let dev = f["dev"]!
            let r = writeText(p("bus/pci/drivers_probe"), dev)
            compare(line, expected: line.result!, actual: "\(r); driver=\(driver(dev)); type=\(type(group(of: dev)))")
        case "priv": privilege(line)
        case "vfio": vfio(line)
        default: skip(line, .gap("unknown line kind \(line.kind)"))
        }
    }

    private mutating func unbindQuietly(_ dev: String) {
        let drv = driver(dev)
        if drv != "none" { _ = writeText(p("bus/pci/drivers/\(drv)/unbind"), dev) }
    }

    /// `trans-setup`: the type is set with the device unbound; for a
    /// `state=bound` transition the boot driver is bound again afterwards.
    private mutating func transSetup(_ line: TranscriptLine) {
        let f = line.fields
        let g = f["group"]!
        // Each transition starts with `unbind $NIC1 >/dev/null; kmsg >/dev/null`.
        let dev = GuestRoles.std["NIC1"]!
        silently { $0.unbindQuietly(dev) }
        compare(line, expected: line.result!, actual: writeText(typePath(g), f["set"]!) + "; type=\(type(g))")
    }

    private mutating func bindQuietly(_ dev: String, _ drv: String) {
        _ = writeText(p("bus/pci/drivers/\(drv)/bind"), dev)
    }

    /// `settype group=G type=T (devices unbound) -> R` then `settype group=G rebound: BDF=drv ...`.
    private mutating func settype(_ line: TranscriptLine) {
        let f = line.fields
        let g = f["group"]!
        if line.text.contains(" rebound:") {
            let wanted = line.text.components(separatedBy: "rebound: ")[1].split(separator: " ").map { pair in
                let parts = pair.split(separator: "=")
                return (String(parts[0]), String(parts[1]))
            }
            for (dev, drv) in settypeUnbound { _ = writeText(p("bus/pci/drivers/\(drv)/bind"), dev) }
            settypeUnbound = []
            compare(line, expected: wanted.map { "\($0.0)=\($0.1)" }.joined(separator: " "),
                    actual: wanted.map { "\($0.0)=\(driver($0.0))" }.joined(separator: " "))
            return
        }
        settypeUnbound = members(g).compactMap { dev in
            let drv = driver(dev)
            guard drv != "none" else { return nil }
            _ = writeText(p("bus/pci/drivers/\(drv)/unbind"), dev)
            return (dev, drv)
        }
        compare(line, expected: line.result!, actual: writeText(typePath(g), f["type"]!) + "; type=\(type(g))")
    }

    /// `write group=G state=S data="..." -> R; type=T`, with the extras' special forms.
    private mutating func write(_ line: TranscriptLine) {
        let f = line.fields
        let g = f["group"]!
        let spec = String(Transcript.unescape(f["data"]!).map { Character(UnicodeScalar($0)) })
        let raw = f["data"]!
        var bytes = Transcript.unescape(raw)
        var flags = O_WRONLY
        var offset: Int?
        if raw == "\"A*5000\"" {
            bytes = Array(repeating: UInt8(ascii: "A"), count: 5000)
        } else if let r = spec.range(of: " padded to ") {
            let count = Int(spec[r.upperBound...].prefix { $0.isNumber })!
            bytes = Array(Transcript.unescape(String(spec[..<r.lowerBound])))
            bytes += Array(repeating: 0, count: count - bytes.count)
        } else if let r = spec.range(of: " pwrite offset=") {
            bytes = Array(spec[..<r.lowerBound].utf8)
            offset = Int(spec[r.upperBound...])!
        } else if let r = spec.range(of: " O_") {
            bytes = Array(spec[..<r.lowerBound].utf8)
            let mode = String(spec[spec.index(after: r.lowerBound)...])
            flags = mode.hasPrefix("O_RDWR") ? O_RDWR
                : mode.hasPrefix("O_WRONLY+O_TRUNC") ? O_WRONLY | O_TRUNC
                : mode.hasPrefix("O_WRONLY+O_APPEND") ? O_WRONLY | O_APPEND
                : O_RDONLY
        }
        let r = sysw(typePath(g), bytes, flags: flags, offset: offset)
        compare(line, expected: line.result!, actual: r + "; type=\(type(g))")
    }

    /// `read group=G file=F <how>: ok len=N reads=R data="..."`.
    private mutating func read(_ line: TranscriptLine) {
        let f = line.fields
        let g = f["group"]!, file = f["file"]!.replacingOccurrences(of: ":", with: "")
        guard let colon = line.text.range(of: ": ") else { return skip(line, .gap("unparsed read line")) }
        let how = String(line.text[..<colon.lowerBound])
        let expected = String(line.text[colon.upperBound...])
        let path = p("kernel/iommu_groups/\(g)/\(file)")
        var chunk = 4096
        var offset: Int?
        if let c = TranscriptLine.fields(how)["chunk"] { chunk = Int(c)! }
        if let o = TranscriptLine.fields(how)["pread-offset"] { offset = Int(o)! }
        compare(line, expected: expected, actual: readOutcome(path, chunk: chunk, offset: offset))
    }

    /// Reads like the oracle's reader: `chunk`-byte read(2)s until EOF, or one pread.
    private func readOutcome(_ path: String, chunk: Int = 4096, offset: Int? = nil) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "err \(ErrnoName.name(errno))@open" }
        defer { close(fd) }
        var data: [UInt8] = []
        var reads = 0
        var buffer = [UInt8](repeating: 0, count: max(chunk, 4096))
        while true {
            let n = offset.map { Glibc.pread(fd, &buffer, 4096, off_t($0)) } ?? Glibc.read(fd, &buffer, chunk)
            reads += 1
            if n < 0 { return "err \(ErrnoName.name(errno))" }
            data += buffer[0..<n]
            if n == 0 || offset != nil { break }
        }
        return "ok len=\(data.count) reads=\(reads) data=\(Transcript.escape(data))"
    }

    /// `node path=/sys/... kind=K mode=M uid=U gid=G size=S nlink=N [target=...] [content=...]`.
    private mutating func node(_ line: TranscriptLine) {
        let f = line.fields
        let sysPath = f["path"]!
        let path = p(String(sysPath.dropFirst(5)))
        guard let st = Syscall.lstat(path) else {
            return compare(line, expected: line.text, actual: "node path=\(sysPath) err=\(ErrnoName.name(errno))")
        }
        let kind = switch st.st_mode & S_IFMT { case S_IFDIR: "dir"; case S_IFLNK: "lnk"; case S_IFREG: "reg"; default: "other" }
        var actual = "node path=\(sysPath) kind=\(kind) mode=\(String(format: "%04o", st.st_mode & 0o7777)) uid=\(st.st_uid) gid=\(st.st_gid) size=\(kind == "dir" ? 0 : st.st_size) nlink=\(st.st_nlink)"
        if kind == "lnk" { actual += " target=\(Transcript.escape(Array((Syscall.readlink(path) ?? "").utf8)))" }
        if kind == "reg" {
            switch Syscall.read(path) {
            case .success(let t): actual += " content=\(Transcript.escape(Array(t.utf8)))"
            case .failure(let e): actual += " content=err \(ErrnoName.name(e.code))"
            }
        }
        compare(line, expected: line.text, actual: actual)
    }

    /// `link dev=BDF iommu_group=T iommu=T driver=T`: readlink of the device's links (`<none>` when absent).
    private mutating func link(_ line: TranscriptLine) {
        let f = line.fields
        let words = line.step.split(separator: " ")
        if f["dev"] == nil, words.count == 2, words[1].hasPrefix("/sys/"), let target = line.result {
            // `link /sys/PATH -> TARGET`: one readlink.
            return compare(line, expected: target, actual: Syscall.readlink(p(String(words[1].dropFirst(5)))) ?? "<none>")
        }
        guard let dev = f["dev"] else { return skip(line, .gap("unparsed link line")) }
        // `iommu_group=$(readlink …)` prints nothing for a missing link; the
        // others fall back to `<none>`.
        let names = ["iommu_group", "iommu", "driver"]
        let actual = names.map { name in
            "\(name)=\(Syscall.readlink(p("bus/pci/devices/\(dev)/\(name)")) ?? (name == "iommu_group" ? "" : "<none>"))"
        }
        compare(line, expected: names.map { "\($0)=\(f[$0] ?? "?")" }.joined(separator: " "),
                actual: actual.joined(separator: " "))
    }

    /// `misc <operation> <path under /sys/kernel> -> R`: tree mutations,
    /// truncate, opens and lstat, on the group the guest used (10).
    private mutating func misc(_ line: TranscriptLine) {
        let step = String(line.step.dropFirst(5))
        let words = step.split(separator: " ").map(String.init)
        func k(_ relative: String) -> String { p("kernel/" + relative) }
        func errnoOutcome(_ rc: Int32) -> String { rc == 0 ? "ok 0" : "err \(ErrnoName.name(errno))" }
        if line.result == nil, step.hasPrefix("type=") {
            let f = line.fields
            let dev = members("10").first ?? "none"
            return compare(line, expected: "type=\(f["type"]!) driver=\(f["driver"]!)",
                           actual: "type=\(type("10")) driver=\(driver(dev))")
        }
        guard let expected = line.result, words.count >= 2 else { return skip(line, .gap("unrecognised misc line")) }
        let actual: String
        switch words[0] {
        case "mkdir": actual = errnoOutcome(mkdir(k(words[1]), 0o755))
        case "rmdir": actual = errnoOutcome(rmdir(k(words[1])))
        case "create":
            let fd = open(k(words[1]), O_WRONLY | O_CREAT | O_EXCL, 0o644)
            if fd >= 0 { close(fd) }
            actual = fd >= 0 ? "ok 0" : "err \(ErrnoName.name(errno))"
        case "unlink": actual = errnoOutcome(unlink(k(words[1])))
        case "symlink": actual = errnoOutcome(symlink("type", k(words[1])))
        case "rename":
            let names = words[1].components(separatedBy: "->")
            actual = errnoOutcome(rename(k("iommu_groups/10/" + names[0]), k("iommu_groups/10/" + names[1])))
        case "truncate": actual = errnoOutcome(truncate(k("iommu_groups/10/" + words[1]), off_t(words[2])!))
        case "open":
            // `open dir O_WRONLY|O_DIRECTORY PATH`
            let fd = open(k(words.last!), O_WRONLY | O_DIRECTORY)
            if fd >= 0 { close(fd) }
            actual = fd >= 0 ? "ok 0" : "err \(ErrnoName.name(errno))"
        case "write":
            // `write to [dir|nonexistent] PATH [(note)]`
            guard let path = words.dropFirst(2).first(where: { $0.hasPrefix("iommu_groups/") }) else {
                return skip(line, .gap("unrecognised misc write"))
            }
            actual = sysw(k(path), Array("DMA".utf8))
        case "read":
            guard let path = words.first(where: { $0.hasPrefix("iommu_groups/") }) else { return skip(line, .gap("unrecognised misc read")) }
            let fd = open(k(path), O_RDONLY)
            if fd >= 0 { close(fd) }
            actual = fd >= 0 ? "ok" : "err \(ErrnoName.name(errno))@open"
        case "lstat":
            guard let st = Syscall.lstat(k(words[1])) else {
                actual = "err \(ErrnoName.name(errno))"
                break
            }
            actual = "ok mode=\(String(st.st_mode, radix: 8)) uid=\(st.st_uid) gid=\(st.st_gid) size=\(st.st_size) nlink=\(st.st_nlink)"
        default: return skip(line, .gap("unrecognised misc line"))
        }
        compare(line, expected: expected, actual: actual)
    }

    // MARK: VFIO

    private mutating func vfio(_ line: TranscriptLine) {
        let f = line.fields
        let body = line.step.dropFirst(5)
        if body.hasPrefix("case=") {
            let g = f["group"]
            if let g, !body.contains(" end ") {
                vfioGroup = g
                return compare(line, expected: "type=\(f["type"]!)", actual: "type=\(type(g))")
            }
            guard let g = vfioGroup else { return skip(line, .gap("vfio case end without a case")) }
            let devs = members(g).filter { driver($0) != "none" || f["drivers"] == nil }
            var expected = "type=\(f["type"]!)", actual = "type=\(type(g))"
            if let d = f["driver"] { expected += " driver=\(d)"; actual += " driver=\(driver(members(g).first!))" }
            if let d = f["drivers"] {
                expected += " drivers=\(d)"
                actual += " drivers=\(devs.map { driver($0) }.joined(separator: ","))"
            }
            return compare(line, expected: expected, actual: actual)
        }
        guard let g = vfioGroup else { return skip(line, .gap("vfio line outside a case")) }
        if body.hasPrefix("vfiohold") { return vfioHold(line, String(body.dropFirst(9)), group: g) }
        if body.hasPrefix("dev-node") {
            return skip(line, .guest("/dev/vfio character device nodes (outside /sys; no /dev/vfio in the mount)"))
        }
        if body.hasPrefix("held: unbind attempt") { return skip(line, .guest("a note: the guest did not try this")) }
        if body.hasPrefix("state: ") {
            let pairs = body.dropFirst(7).split(separator: " ").map(String.init)
            return compare(line, expected: pairs.joined(separator: " "),
                           actual: pairs.map { "\($0.split(separator: "=")[0])=\(driver(String($0.split(separator: "=")[0])))" }.joined(separator: " "))
        }
        if body.hasPrefix("held: ") || body.hasPrefix("released: ") || body.hasPrefix("partial-hold: ") {
            var expected = "type=\(f["type"]!)", actual = "type=\(type(g))"
            if let r = line.text.range(of: " read=") {
                expected += " read=" + line.text[r.upperBound...]
                actual += " read=" + readOutcome(typePath(g))
            }
            return compare(line, expected: expected, actual: actual)
        }
        skip(line, .gap("unrecognised vfio line"))
    }

    /// One `vfiohold` line: the guest's VFIO user, step by step, through
    /// `iommufs ctl vfio`. Steps that return a file descriptor
    /// (open-container, open-group, get-device-fd) are compared by success
    /// or errno only: the number belongs to the guest process. Other steps
    /// compare the ioctl's return value. `held` and `failed` are checked
    /// against the group's status (container set or not); after `failed`
    /// and at `released` the user's files are closed, as its exit does.
    private mutating func vfioHold(_ line: TranscriptLine, _ body: String, group g: String) {
        let container = "hold\(vfioHolds)"
        let exit = { (mount: MountedMachine) in
            [mount.ctlOutcome(["vfio", "release", g]), mount.ctlOutcome(["vfio", "close-container", container])]
        }
        guard body.hasPrefix("step=") else {
            switch body {
            case "held", "failed":
                let status = mount.ctlOutcome(["vfio", "status", g])
                var actual = status == "ok viable=1 container_set=1" ? "held" : "failed (\(status))"
                if body == "failed", actual.hasPrefix("failed") {
                    let closed = exit(mount)
                    actual = closed.allSatisfy { $0 == "ok 0" } ? "failed" : "failed, then exit: \(closed)"
                }
                return compare(line, expected: body, actual: actual)
            case "released":
                return compare(line, expected: "ok 0, ok 0", actual: exit(mount).joined(separator: ", "))
            default:
                guard body.hasPrefix("group-status ") else { return skip(line, .gap("unrecognised vfiohold line")) }
                return compare(line, expected: String(body.dropFirst(13)), actual: vfioStatus ?? "(no status read)")
            }
        }
        let step = body.dropFirst(5).prefix { $0 != " " }
        let fdStep = ["open-container", "open-group"].contains(step) || step.hasPrefix("get-device-fd:")
        let arguments: [String]
        switch step {
        case "open-container":
            vfioHolds += 1
            arguments = ["open-container", "hold\(vfioHolds)"]
        case "get-api-version": arguments = ["api-version", container]
        case "check-ext-type1v2": arguments = ["check-extension", container, "type1v2"]
        case "open-group": arguments = ["open-group", g]
        case "group-get-status": arguments = ["status", g]
        case "group-set-container": arguments = ["attach", "--container", container, g]
        case "set-iommu-type1v2": arguments = ["set-iommu", container, "type1v2"]
        // The guest maps one page of its memory at IOVA 0.
        case "map-dma": arguments = ["map-dma", container, "--iova", "0", "--size", "4096"]
        default:
            guard step.hasPrefix("get-device-fd:") else { return skip(line, .gap("unrecognised vfiohold step")) }
            arguments = ["get-device-fd", g, String(step.dropFirst(14))]
        }
        var actual = mount.ctlOutcome(["vfio"] + arguments)
        var expected = line.result!
        if step == "group-get-status", actual.hasPrefix("ok ") {
            vfioStatus = String(actual.dropFirst(3))
            actual = "ok 0"
        }
        if fdStep {
            expected = expected.hasPrefix("ok ") ? "ok (a descriptor)" : expected
            actual = actual.hasPrefix("ok ") ? "ok (a descriptor)" : actual
        }
        compare(line, expected: expected, actual: actual)
    }

    // MARK: privileges

    private mutating func privilege(_ line: TranscriptLine) {
        guard let dev = lastUnbound else { return skip(line, .gap("no group for the privilege case")) }
        let g = group(of: dev)
        let type = typePath(g)
        if !privilegesStarted {
            // `sysw $G/$g/type DMA >/dev/null` before the first case (its
            // messages go to the first case's kmsg).
            privilegesStarted = true
            _ = writeText(type, "DMA")
        }
        let step = String(line.step.dropFirst(5))
        let words = step.split(separator: " ").map(String.init)
        let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]

        if step.hasPrefix("lstat type after") {
            let expected = String(line.text[line.text.range(of: ": ")!.upperBound...])
            guard let st = Syscall.lstat(type) else { return compare(line, expected: expected, actual: "no such file") }
            return compare(line, expected: expected,
                           actual: "ok mode=\(String(st.st_mode, radix: 8)) uid=\(st.st_uid) gid=\(st.st_gid) size=\(st.st_size) nlink=\(st.st_nlink)")
        }
        if step.hasPrefix("root chmod type ") {
            let r = chmod(type, mode_t(words[3], radix: 8)!) == 0 ? "ok 0" : "err \(ErrnoName.name(errno))"
            return compare(line, expected: line.result!, actual: r + "; type=\(self.type(g))")
        }
        if step.hasPrefix("root chown type ") {
            let r = chown(type, uid_t(words[3])!, 0) == 0 ? "ok 0" : "err \(ErrnoName.name(errno))"
            return compare(line, expected: line.result!, actual: r + "; type=\(self.type(g))")
        }
        if step.hasPrefix("uid=65534 read ") {
            let file = p("kernel/iommu_groups/\(g)/\(words[2])")
            let out = IntegrationTests.run("/usr/bin/setpriv", nobody + ["cat", file])
            // cat's read count is not observable from outside; the length and the data are.
            let expected = line.result!.components(separatedBy: "; type=")[0]
                .replacingOccurrences(of: " reads=2", with: "")
            let actual = out.status == 0
                ? "ok len=\(out.stdout.utf8.count) data=\(Transcript.escape(Array(out.stdout.utf8)))" : "err \(out.stderr)"
            return compare(line, expected: expected + "; type=" + line.result!.components(separatedBy: "; type=")[1],
                           actual: actual + "; type=\(self.type(g))")
        }
        // The writes: who, before or after the open, which file, which data.
        var setpriv: [String] = []
        var afterOpen = false
        if words[0].hasPrefix("uid=65534") || words.contains("(owner") {
            setpriv = nobody
            afterOpen = step.hasPrefix("uid=65534(after open)")
        } else if words[0] == "drop" {
            let name = words[1].prefix { $0 != "(" }
            let cap = name == "all" ? "all" : name.lowercased().replacingOccurrences(of: "cap_", with: "")
            setpriv = ["--bounding-set=-\(cap)", "--inh-caps=-all"]
            afterOpen = step.contains("(after open)")
        } else if words[0] != "root" {
            return skip(line, .gap("unrecognised privilege case"))
        }
        guard let w = words.firstIndex(of: "write"), w + 1 < words.count else { return skip(line, .gap("unrecognised privilege case")) }
        let target = words[w + 1]
        let file = target == "reserved_regions" ? p("kernel/iommu_groups/\(g)/reserved_regions") : type
        let data = target == "reserved_regions" ? "x" : target == "empty" ? "" : target
        let r: String
        if setpriv.isEmpty {
            r = writeText(file, data)
        } else {
            r = privWrite(file, data, setpriv: setpriv, afterOpen: afterOpen)
        }
        compare(line, expected: line.result!, actual: r + "; type=\(self.type(g))")
    }

}

extension MountedMachine {
    /// `iommufs ctl --mount ROOT ARGS`: `ok` and what it printed (`ok 0`
    /// when it printed nothing, as an ioctl returning 0), or `err ERRNO`
    /// from `iommufs: ERRNO: ...`.
    func ctlOutcome(_ arguments: [String]) -> String {
        let out = run(Self.binary, ["ctl", "--mount", root] + arguments)
        if out.status == 0 {
            let printed = out.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            return "ok " + (printed.isEmpty ? "0" : printed)
        }
        let name = out.stderr.split(separator: ":").dropFirst().first.map { $0.trimmingCharacters(in: .whitespaces) }
        return "err \(name ?? out.stderr)"
    }
}

/// Replays `6.12-default-alt-pci.txt` (the oracle's second machine and its
/// PCI/driver-core scenario) through a mount of `--machine qemu-q35-alt`.
/// Each driver-core step is the same sysfs write through the mount. Steps
/// the mount cannot perform (config space, NVMe admin commands) are
/// skipped with the reason.
struct AltPCIReplay: TranscriptReplay {
    let mount: MountedMachine
    let lines: [TranscriptLine]
    var report = ReplayReport()
    private(set) var index = 0
    static let notPresented = SkipReason.gap("file the mount does not present")
    /// Descriptors opened before a removal (`fd` lines), by target and direction.
    private var fds: [String: Int32] = [:]
    /// Whether the guest's silent `echo 0 > sriov_drivers_autoprobe` ran.
    private var autoprobeCleared = false
    /// Each device's group when a `remove` step removed it (the guest's `$g`).
    private var groupBefore: [String: String] = [:]
    /// The `remove-case` being replayed: its label, the group it is about
    /// and the devices it removed, as the guest's script keeps them.
    private var removal: (label: String, group: String?, removed: [String], subject: String?)?
    /// Devices removed since the last `remove-case` line.
    private var removedSinceCaseLine: [String] = []
    private var removedSection = ""
    /// Compares each step's `kmsg:` lines; nil: they are skipped.
    var kernelLog: KernelLogComparison?
    /// The `ls -lan` listing being compared with `ls-la` lines.
    var lsLaReplay = LsLaReplay()

    init(mount: MountedMachine, lines: [TranscriptLine]) {
        self.mount = mount
        self.lines = lines
    }

    mutating func run() {
        while index < lines.count {
            let line = lines[index]
            report.note(line)
            // Descriptors of a removal case are opened before its first step.
            if line.kind == "remove-case" || line.kind == "fd" || (line.kind == "remove" && lines[index...].prefix(3).contains { $0.kind == "remove-case" }) {
                if lines[index...].prefix(40).contains(where: { $0.kind == "fd" }) { openDescriptors(from: index) }
            }
            step(line)
            if line.kind != "kmsg:" { kernelLog?.compareStep(at: index, of: lines, into: &report) }
            index += 1
        }
        kernelLog?.finish(lines.last!, into: &report)
        for fd in fds.values where fd >= 0 { close(fd) }
    }

    // MARK: the mount

    private func sys(_ sysPath: String) -> String { p(String(sysPath.dropFirst(5))) }
    private func dev(_ d: String, _ file: String) -> String { p("bus/pci/devices/\(d)/\(file)") }

    private func type(_ group: String) -> String { mount.typeAsTranscribed(group) }

    private func last(_ link: String?) -> String? { link.map { String($0.split(separator: "/").last!) } }
    private func driver(_ d: String) -> String { last(Syscall.readlink(dev(d, "driver"))) ?? "none" }
    private func group(of d: String) -> String { last(Syscall.readlink(dev(d, "iommu_group"))) ?? "none" }
    private func members(_ group: String) -> [String] { Syscall.list(p("kernel/iommu_groups/\(group)/devices")).sorted() }

    private func text(_ path: String) -> String {
        let t = Syscall.text(path) ?? "<unreadable>"
        return t.hasSuffix("\n") ? String(t.dropLast()) : t
    }

    /// `driver_override` as the transcript prints it (a 4094-byte run of A as `<A*4094>`).
    private func override(_ d: String) -> String {
        guard case .success(let t) = Syscall.read(dev(d, "driver_override")) else { return "<unreadable>" }
        let body = t.hasSuffix("\n") ? String(t.dropLast()) : t
        if body.count > 100, body.allSatisfy({ $0 == "A" }) { return "\"<A*\(body.count)>\\n\"" }
        return Transcript.escape(Array(t.utf8))
    }

    private func sysw(_ path: String, _ bytes: [UInt8]) -> String {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return "err \(ErrnoName.name(errno))@open" }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 { return "err \(ErrnoName.name(errno))" }
        return n < bytes.count ? "ok \(n) short len=\(bytes.count)" : "ok \(n)"
    }

    /// The data of a step: `"C-escaped"`, `A*N`, or an unquoted token with escapes.
    private func data(_ token: Substring) -> (bytes: [UInt8], rest: Substring) {
        if token.hasPrefix("\"") {
            var escaped = false
            var i = token.index(after: token.startIndex)
            while i < token.endIndex {
                if escaped { escaped = false } else if token[i] == "\\" { escaped = true } else if token[i] == "\"" { break }
                i = token.index(after: i)
            }
            let end = i < token.endIndex ? token.index(after: i) : i
            return (Transcript.unescape(String(token[..<end])), token[end...])
        }
        let end = token.firstIndex(of: " ") ?? token.endIndex
        let word = token[..<end]
        if word.hasPrefix("A*"), let n = Int(word.dropFirst(2)) { return (Array(repeating: 65, count: n), token[end...]) }
        return (Transcript.unescape(String(word)), token[end...])
    }

    /// The result: the text after the last ` -> `.
    private func result(_ line: TranscriptLine) -> String {
        String(line.text[line.text.range(of: " -> ", options: .backwards)!.upperBound...])
    }

    private func lstatOutcome(_ path: String) -> String {
        guard let st = Syscall.lstat(path) else { return "err \(ErrnoName.name(errno))" }
        return "ok mode=\(String(st.st_mode, radix: 8)) uid=\(st.st_uid) gid=\(st.st_gid) size=\(st.st_size) nlink=\(st.st_nlink)"
    }

    private func groupsLine() -> String {
        Syscall.list(p("kernel/iommu_groups")).compactMap(Int.init).sorted()
            .map { "\($0):" + members(String($0)).joined(separator: ",") }.joined(separator: " ")
    }

    // MARK: steps

    private mutating func step(_ line: TranscriptLine) {
        let f = line.fields
        let words = line.step.split(separator: " ", omittingEmptySubsequences: false)
        switch line.kind {
        case "meta" where line.step.hasPrefix("meta pci-buses="):
            compare(line, expected: String(line.step.dropFirst(15)), actual: Syscall.list(p("class/pci_bus")).sorted().joined(separator: " "))
        case "meta", "modload": skip(line, .guest("describes the guest boot"))
        case "kmsg:": break  // compared after the step that printed it
        case "ls-la": lsLa(line)
        case "readdir":
            let observed = ReaddirOrder.observe(line, on: mount)
            compare(line, expected: observed.expected, actual: observed.actual)
        case "pcicaps":
            // What lspci would decode from `config`, read through the mount as root.
            let d = String(words[1])
            compare(line, expected: words.dropFirst(2).joined(separator: " "),
                    actual: Syscall.bytes(dev(d, "config")).map(PCIConfigDecoder.describe) ?? "<unreadable>")
        case "slot": slot(line, words)
        case "slots":
            // Case e ends with `S 0; echo 1 > $PCI/$PF/sriov_drivers_autoprobe; kmsg`.
            if line.text.hasPrefix("slots before-f") { _ = sysw(dev(GuestRoles.alt["PF"]!, "sriov_drivers_autoprobe"), Array("1\n".utf8)) }
            compare(line, expected: line.text.components(separatedBy: ": ").dropFirst().joined(separator: ": "),
                    actual: Syscall.list(p("bus/pci/slots")).sorted().map { "\($0)=\(text(p("bus/pci/slots/\($0)/address")))" }.joined(separator: " "))
        case "nvme", "nvmeadm": skip(line, .guest("NVMe controller state and admin commands inside the guest"))
        case "remove-case": removeCase(line)
        case "node", "link", "write": Replay.single(line, on: mount, into: &report)
        case "topology":
            let d = f["bdf"]!
            compare(line, expected: "vendor=\(f["vendor"]!) device=\(f["device"]!) class=\(f["class"]!)",
                    actual: "vendor=\(text(dev(d, "vendor"))) device=\(text(dev(d, "device"))) class=\(text(dev(d, "class")))")
        case "pcidev":
            let d = String(words[1])
            let expected = words.dropFirst(2).joined(separator: " ")
            let rm = Syscall.lstat(dev(d, "reset_method")) == nil ? "<no reset_method file>" : text(dev(d, "reset_method"))
            let total = Syscall.lstat(dev(d, "sriov_totalvfs")) == nil ? "-" : text(dev(d, "sriov_totalvfs"))
            let actual = "vendor=\(text(dev(d, "vendor"))) device=\(text(dev(d, "device"))) class=\(text(dev(d, "class"))) driver=\(driver(d)) group=\(group(of: d)) reset=\(Syscall.lstat(dev(d, "reset")) == nil ? "no" : "yes") reset_method=\"\(rm)\" sriov_totalvfs=\(total)"
            compare(line, expected: expected, actual: actual)
        case "group":
            let g = String(words[1])
            compare(line, expected: "type=\(f["type"]!) devices=\(line.text.components(separatedBy: "devices=")[1])",
                    actual: "type=\(type(g)) devices=\(members(g).joined(separator: " "))")
        case "groups":
            compare(line, expected: line.text.components(separatedBy: ": ").dropFirst().joined(separator: ": "), actual: groupsLine())
        case "mode":
            let actual = lstatOutcome(sys(String(words[1])))
            if actual == "err ENOENT", line.result != actual { return skip(line, Self.notPresented) }
            compare(line, expected: line.result!, actual: actual)
        case "final":
            let g = line.fields["group"]!
            compare(line, expected: "type=\(line.fields["type"]!) drivers=\(line.fields["drivers"]!)",
                    actual: "type=\(type(g)) drivers=\(members(g).map { "\($0)=\(driver($0))," }.joined())")
        case "readwo": readwo(line, words)
        case "state":
            let d = f["dev"]!
            compare(line, expected: line.step, actual: "state dev=\(d) driver=\(driver(d)) driver_override=\(override(d)) group=\(group(of: d)) type=\(type(group(of: d)))")
        case "bind", "unbind":
            if let d = f["dev"], let drv = f["driver"] {
                let r = sysw(p("bus/pci/drivers/\(drv)/\(line.kind)"), Array(d.utf8))
                return compare(line, expected: line.result!, actual: "\(r); driver=\(driver(d))")
            }
            // `bind DRV <- DATA (note) -> R`, `unbind DRV -> DATA (note) -> R`
            let drv = String(words[1])
            let rest = line.text.dropFirst(line.kind.count + drv.count + 2 + 3)
            let bytes = data(rest).bytes
            compare(line, expected: result(line), actual: sysw(p("bus/pci/drivers/\(drv)/\(line.kind)"), bytes))
        case "override":
            let d = String(words[1])
            compare(line, expected: result(line), actual: sysw(dev(d, "driver_override"), data(line.text.dropFirst(9 + d.count + 1)).bytes))
        case "probe":
            compare(line, expected: result(line), actual: sysw(p("bus/pci/drivers_probe"), data(line.text.dropFirst(6)).bytes))
        case "newid", "removeid":
            let file = line.kind == "newid" ? "new_id" : "remove_id"
            if words[1] == "uid=65534" {
                let path = p("bus/pci/drivers/\(words[2])/\(file)")
                let out = IntegrationTests.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/bash", "-c", "exec 3>>\"$1\"", "_", path])
                let actual = out.status == 0 ? "ok" : "err \(ErrnoName.fromMessage(out.stderr) ?? out.stderr)@open"
                return compare(line, expected: result(line), actual: actual)
            }
            let drv = String(words[1])
            let bytes = data(line.text.dropFirst(line.kind.count + 1 + drv.count + 1)).bytes
            compare(line, expected: result(line), actual: sysw(p("bus/pci/drivers/\(drv)/\(file)"), bytes))
        case "types-begin", "types-end":
            let g = f["group"]!
            let pairs = f["drivers"]!.split(separator: ",").map { $0.split(separator: "=").map(String.init) }
            var expected = "type=\(f["type"]!) drivers=\(f["drivers"]!)"
            var actual = "type=\(type(g)) drivers=\(pairs.map { "\($0[0])=\(driver($0[0]))" }.joined(separator: ","))"
            if let devices = f["devices"] {
                expected += " devices=\(devices)"
                actual += " devices=\(members(g).joined(separator: ","))"
            }
            compare(line, expected: expected, actual: actual)
        case "reset-begin":
            let d = f["dev"]!
            compare(line, expected: "driver=\(f["driver"]!) group=\(f["group"]!) type=\(f["type"]!) reset_method=\(f["reset_method"]!)",
                    actual: "driver=\(driver(d)) group=\(group(of: d)) type=\(type(group(of: d))) reset_method=\"\(text(dev(d, "reset_method")))\"")
        case "reset": reset(line, f)
        case "reset_method":
            let d = String(words[1])
            compare(line, expected: result(line), actual: sysw(dev(d, "reset_method"), data(line.text.dropFirst(13 + d.count + 1)).bytes))
        case "sriov": sriov(line, words)
        case "autoprobe":
            let d = String(words[1])
            if !autoprobeCleared {
                // `echo 0 > $PCI/$PF/sriov_drivers_autoprobe` before the autoprobe cases.
                autoprobeCleared = true
                _ = sysw(dev(d, "sriov_drivers_autoprobe"), Array("0\n".utf8))
            }
            compare(line, expected: result(line), actual: sysw(dev(d, "sriov_drivers_autoprobe"), data(line.text.dropFirst(10 + d.count + 1 + 24)).bytes))
        case "vf": vf(line, words)
        case "remove":
            let d = String(words[1])
            groupBefore[d] = group(of: d)
            if line.section != removedSection { removedSinceCaseLine = [] }
            removedSection = line.section
            removedSinceCaseLine.append(d)
            compare(line, expected: result(line), actual: sysw(dev(d, "remove"), data(line.text.dropFirst(7 + d.count + 1)).bytes))
        case "rescan":
            let path = String(words[1])
            let bytes = data(line.text.dropFirst(7 + path.count + 1)).bytes
            compare(line, expected: result(line), actual: sysw(sys(path), bytes))
        case "fd": fd(line, words)
        default: skip(line, .gap("unknown line kind \(line.kind)"))
        }
    }

    /// `remove-case LABEL: ...`: the guest's facts about a removal case,
    /// each `KEY=VALUE` evaluated on the mount (`present`, `group`,
    /// `driver`, `group-dir` and `group-devices` of the case's group,
    /// `old-group` and `new-group(s)`, `slot-dirs`, `buses`, the slot's
    /// `address` and `power`). A bare address names the device the next
    /// keys are about; the rest of the line is the guest's narrative.
    private mutating func removeCase(_ line: TranscriptLine) {
        let words = line.text.split(separator: " ").map(String.init)
        let label = String(words[1].dropLast())
        if removal?.label != label { removal = (label, nil, [], nil) }
        if removedSection == line.section { removal?.removed += removedSinceCaseLine }
        removedSinceCaseLine = []
        // Before its first step the guest set the PF's autoprobe silently
        // (`echo 0 > sriov_drivers_autoprobe`, case e).
        if line.text.hasSuffix("(sriov_drivers_autoprobe=0)") {
            _ = sysw(dev(GuestRoles.alt["PF"]!, "sriov_drivers_autoprobe"), Array("0\n".utf8))
        }
        let isAddress = GuestRoles.isAddress
        var subject = removal?.subject
        var slot: String?
        var expected: [String] = [], actual: [String] = []
        func fact(_ key: String, _ want: String, _ have: String) { expected.append("\(key)=\(want)"); actual.append("\(key)=\(have)") }
        var i = 2
        while i < words.count {
            var w = words[i]
            i += 1
            while w.hasSuffix(",") || w.hasSuffix(";") || w.hasSuffix(":") { w.removeLast() }
            if isAddress(w) {
                subject = w
                if words[i - 2] == "removed" { fact("present(\(w))", "no", present(w)) }
                continue
            }
            if w == "(group", i < words.count, let d = subject {
                let id = String(words[i].prefix { $0.isNumber })
                i += 1
                fact("group-before(\(d))", id, groupBefore[d] ?? "?")
                continue
            }
            guard !w.hasPrefix("("), let eq = w.firstIndex(of: "=") else { continue }
            let key = String(w[..<eq]), value = String(w[w.index(after: eq)...])
            // The case's group: named on its first line, else the group of
            // the first device it removed.
            let g = removal?.group ?? removal?.removed.first.flatMap { groupBefore[$0] }
            switch key {
            case _ where isAddress(key): fact(key, value, present(key))
            case "dev": subject = value
            case "group":
                let have = subject.map { group(of: $0) } ?? "?"
                if removal?.group == nil { removal?.group = have }
                fact(key, value, have)
            case "driver": fact(key, value, subject.map(driver) ?? "?")
            case "present": fact(key, value, subject.map(present) ?? "?")
            case "group-dir": fact(key, value, g.map { Syscall.lstat(p("kernel/iommu_groups/\($0)")) == nil ? "no" : "yes" } ?? "?")
            case "group-devices": fact(key, value, g.map { members($0).joined(separator: ",") } ?? "?")
            case "slot-dirs": fact(key, value, Syscall.list(p("bus/pci/slots")).sorted().joined(separator: ","))
            case "old-group": fact(key, value, subject.flatMap { groupBefore[$0] } ?? g ?? "?")
            case "new-group": fact(key, value, subject.map { group(of: $0) } ?? "?")
            case "new-groups": fact(key, value, (removal?.removed ?? []).map { group(of: $0) }.joined(separator: ","))
            case "groups", "children":
                // The bridge's and its children's groups (in order, once
                // each); the children, all present before the removal.
                let children = value.split(separator: ",").map(String.init)
                if key == "children" {
                    fact(key, value, children.filter { present($0) == "yes" }.joined(separator: ","))
                } else {
                    let all = ([subject].compactMap { $0 } + (words.first { $0.hasPrefix("children=") }.map { $0.dropFirst(9).split(separator: ",").map(String.init) } ?? []))
                    var seen: [String] = []
                    for d in all where !seen.contains(group(of: d)) { seen.append(group(of: d)) }
                    fact(key, value, seen.joined(separator: ","))
                }
            case "buses":
                let rest = ([value] + words[i...]).joined(separator: " ")
                i = words.count
                fact(key, rest, Syscall.list(p("class/pci_bus")).sorted().joined(separator: " "))
            case "slot": slot = value; fact(key, value, Syscall.lstat(p("bus/pci/slots/\(value)")) == nil ? "<absent>" : value)
            case "address": fact(key, value, text(p("bus/pci/slots/\(slot ?? "?")/address")))
            case "power":
                let path = p("bus/pci/slots/\(slot ?? caseSlot ?? "?")/power")
                fact(key, value, Syscall.text(path).map { $0.hasSuffix("\n") ? String($0.dropLast()) : $0 } ?? "<absent>")
            default: fact(key, value, "<not evaluated>")
            }
            if key == "slot" { caseSlot = value }
        }
        removal?.subject = subject
        compare(line, expected: expected.joined(separator: " "), actual: actual.joined(separator: " "))
    }

    /// The slot the current removal case powers (case g).
    private var caseSlot: String?

    private func present(_ d: String) -> String { Syscall.lstat(dev(d, "")) == nil ? "no" : "yes" }

    private mutating func readwo(_ line: TranscriptLine, _ words: [Substring]) {
        if words[1] == "drop" {
            // `RW "drop CAP_SYS_ADMIN write $DRV/e1000e/bind (bound dev)" -D admin $DRV/e1000e/bind $HPNIC`
            let path = sys(String(words[4]))
            return compare(line, expected: result(line),
                           actual: privWrite(path, GuestRoles.alt["HPNIC"]!, setpriv: ["--bounding-set=-sys_admin", "--inh-caps=-all"], afterOpen: false))
        }
        if words[1] == "uid=65534" { return asNobody(line, words) }
        let rdwr = words[2] == "O_RDWR"
        let path = sys(String(words[rdwr ? 3 : 2]))
        let fd = open(path, words[1] == "write" ? O_WRONLY : rdwr ? O_RDWR : O_RDONLY)
        if fd < 0 {
            let actual = "err \(ErrnoName.name(errno))@open"
            if actual == "err ENOENT@open", result(line) != actual { return skip(line, Self.notPresented) }
            return compare(line, expected: result(line), actual: actual)
        }
        defer { close(fd) }
        guard words[1] == "read" else { return compare(line, expected: result(line), actual: "ok") }
        var data: [UInt8] = [], reads = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(fd, &buffer, 4096)
            reads += 1
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        compare(line, expected: result(line), actual: "ok len=\(data.count) reads=\(reads) data=\(Transcript.escape(data))")
    }

    /// `readwo uid=65534 read|write PATH`: the step run by user nobody.
    /// A read is dd's with 4096-byte blocks, which reads as the guest's
    /// reader does; its `F+P records in` are the reads that returned data.
    private mutating func asNobody(_ line: TranscriptLine, _ words: [Substring]) {
        let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]
        let path = sys(String(words[3]))
        guard words[2] == "read" else {
            return compare(line, expected: result(line), actual: privWrite(path, "1", setpriv: nobody, afterOpen: false))
        }
        let out = IntegrationTests.run("/usr/bin/setpriv", nobody + ["/bin/dd", "if=" + path, "bs=4096"])
        guard out.status == 0 else {
            return compare(line, expected: result(line), actual: "err \(ErrnoName.fromMessage(out.stderr) ?? out.stderr)@open")
        }
        let records = out.stderr.split(separator: "\n").first { $0.hasSuffix(" records in") }?
            .split(separator: " ").first?.split(separator: "+").compactMap { Int($0) } ?? []
        let data = Array(out.stdout.utf8)
        compare(line, expected: result(line),
                actual: "ok len=\(data.count) reads=\(records.reduce(1, +)) data=\(Transcript.escape(data))")
    }

    private mutating func reset(_ line: TranscriptLine, _ f: [String: String]) {
        let d = f["dev"]!
        if let data = f["data"] {
            let r = sysw(dev(d, "reset"), Transcript.unescape(data))
            return compare(line, expected: result(line), actual: "\(r); type=\(type(group(of: d)))")
        }
        if let t = f["type-after-2nd-reset"] {
            return compare(line, expected: t, actual: type(group(of: d)))
        }
        var expected = "reset_method=\(f["reset_method"]!)"
        var actual = "reset_method=\"\(text(dev(d, "reset_method")))\""
        if let present = f["reset-file"] {
            expected += " reset-file=\(present)"
            actual += " reset-file=\(Syscall.lstat(dev(d, "reset")) == nil ? "absent" : "present")"
        }
        compare(line, expected: expected, actual: actual)
    }

    /// `slot name=N address=A power=P adapter=A files=F,...` (inventory) or
    /// `slot N power "DATA" -> R` (a write to one of the slot's files).
    private mutating func slot(_ line: TranscriptLine, _ words: [Substring]) {
        guard let name = line.fields["name"] else {
            let file = "bus/pci/slots/\(words[1])/\(words[2])"
            let bytes = data(line.text.dropFirst(5 + words[1].count + 1 + words[2].count + 1)).bytes
            return compare(line, expected: result(line), actual: sysw(p(file), bytes))
        }
        let dir = "bus/pci/slots/\(name)/"
        compare(line, expected: line.step.split(separator: " ").dropFirst(2).joined(separator: " "),
                actual: "address=\(text(p(dir + "address"))) power=\(text(p(dir + "power"))) adapter=\(text(p(dir + "adapter"))) files=\(Syscall.list(p(dir)).sorted().joined(separator: ","))")
    }

    private mutating func sriov(_ line: TranscriptLine, _ words: [Substring]) {
        let pf = "0000:05:00.0"
        let body = line.text.dropFirst(6)
        if body.hasPrefix("sriov_") {  // `sriov sriov_X=V`
            let kv = body.split(separator: "=", maxSplits: 1).map(String.init)
            if Syscall.lstat(dev(pf, kv[0])) == nil { return skip(line, Self.notPresented) }
            return compare(line, expected: kv[1], actual: text(dev(pf, kv[0])))
        }
        if body.hasPrefix("autoprobe=") {
            return compare(line, expected: String(body.dropFirst(10).prefix { $0 != " " }), actual: text(dev(pf, "sriov_drivers_autoprobe")))
        }
        if body.hasPrefix("numvfs=") {
            let f = line.fields
            let links = Syscall.list(dev(pf, "")).filter { $0.hasPrefix("virtfn") }.sorted().joined(separator: ",")
            return compare(line, expected: "numvfs=\(f["numvfs"]!) virtfn-links=\(f["virtfn-links"] ?? "")",
                           actual: "numvfs=\(text(dev(pf, "sriov_numvfs"))) virtfn-links=\(links)")
        }
        if body.hasPrefix("after-probe:") {
            // QEMU keeps the VFs offline until the NVMe virtualization-management
            // commands assign them queues, so nvme's probe of them failed in the
            // guest. The mount's nvme binds them; unbind them to stay with the guest.
            for vf in Syscall.list(dev(pf, "")).filter({ $0.hasPrefix("virtfn") }) {
                if let target = last(Syscall.readlink(dev(pf, vf))), driver(target) != "none" {
                    _ = sysw(p("bus/pci/drivers/\(driver(target))/unbind"), Array(target.utf8))
                }
            }
            return skip(line, .guest("nvme's probe of an offline QEMU NVMe VF fails (no queues assigned); the mount's VFs are unbound to match"))
        }
        guard words.count >= 3, words[2] == "sriov_numvfs" else { return skip(line, .gap("unrecognised sriov line")) }
        let d = String(words[1])
        compare(line, expected: result(line), actual: sysw(dev(d, "sriov_numvfs"), data(line.text.dropFirst(6 + d.count + 1 + 13)).bytes))
    }

    /// `vf link=virtfnN -> ../BDF dev=BDF physfn=... vendor=... [driver=...] group=... type=... group-devices=... reset_method="..." sriov_files=...`
    /// and `vf BDF sriov-files=...`.
    private mutating func vf(_ line: TranscriptLine, _ words: [Substring]) {
        func sriovFiles(_ d: String) -> String {
            Syscall.list(dev(d, "")).filter { $0.hasPrefix("sriov_") }.sorted().joined(separator: ",")
        }
        if !words[1].hasPrefix("link=") {  // `vf BDF sriov-files=...`
            let d = String(words[1])
            return compare(line, expected: String(words[2]), actual: "sriov-files=\(sriovFiles(d))")
        }
        let link = String(words[1].dropFirst(5))
        let after = String(line.text[line.text.range(of: " -> ")!.upperBound...])
        let f = TranscriptLine.fields(after)
        let d = f["dev"]!
        let g = group(of: d)
        var actual = "\(Syscall.readlink(dev("0000:05:00.0", link)) ?? "<none>") dev=\(d) physfn=\(Syscall.readlink(dev(d, "physfn")) ?? "<none>") vendor=\(text(dev(d, "vendor"))) device=\(text(dev(d, "device")))"
        if f["driver"] != nil { actual += " driver=\(driver(d))" }
        actual += " group=\(g) type=\(type(g)) group-devices=\(members(g).joined(separator: ",")) reset_method=\"\(text(dev(d, "reset_method")))\" sriov_files=\(sriovFiles(d))"
        compare(line, expected: after, actual: actual)
    }

    /// `fd TARGET (note) read|write ["DATA"] -> R` or `fd TARGET write "DATA"
    /// (note) -> R`: I/O through a descriptor the guest opened before the
    /// removal. All descriptors of a removal case are opened before its first
    /// step (at the first `fd` line or the `remove-case` line that precedes
    /// it, whichever comes first).
    private mutating func fd(_ line: TranscriptLine, _ words: [Substring]) {
        let target = String(words[1])
        // The note may come before or after the direction.
        let isWrite = words.dropFirst(2).first { $0 == "read" || $0 == "write" } == "write"
        let key = target + (isWrite ? " w" : " r")
        guard let fd = fds[key] else { return skip(line, .gap("descriptor was not opened before the change")) }
        if fd < 0 { return compare(line, expected: result(line), actual: "err \(ErrnoName.name(-fd))@open") }
        if isWrite {
            let bytes = data(line.step[line.step.range(of: " write ")!.upperBound...]).bytes
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            return compare(line, expected: result(line), actual: n < 0 ? "err \(ErrnoName.name(errno))" : "ok \(n)")
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.pread(fd, &buffer, 4096, 0)
        compare(line, expected: result(line),
                actual: n < 0 ? "err \(ErrnoName.name(errno))" : "ok len=\(n) reads=1 data=\(Transcript.escape(Array(buffer[0..<n])))")
    }

    /// Opens the descriptors of every `fd` line up to the next transcript
    /// section or `remove-case` of another label, before the step at `index`.
    private mutating func openDescriptors(from start: Int) {
        var label: String?
        for line in lines[start...] {
            if line.section != lines[start].section { break }
            if line.kind == "remove-case" {
                let l = String(line.text.split(separator: " ")[1])
                if let label, l != label { break }
                label = l
                continue
            }
            guard line.kind == "fd" else { continue }
            let target = String(line.text.split(separator: " ")[1])
            for (suffix, isWrite) in [(" r", false), (" w", true)] where fds[target + suffix] == nil {
                let parts = target.split(separator: "/")
                let path = parts[0].hasPrefix("group-")
                    ? p("kernel/iommu_groups/\(parts[0].dropFirst(6))/\(parts[1])")
                    : dev(String(parts[0]), String(parts[1]))
                var fd = open(path, isWrite ? O_WRONLY : O_RDONLY)
                if fd < 0 && isWrite && errno == EACCES { fd = open(path, O_RDONLY) }
                fds[target + suffix] = fd >= 0 ? fd : -errno
            }
        }
    }
}

extension MountedMachine {
    /// A group's `type` as the transcripts print it: the text without its
    /// newline, or `<ERRNO>` when the read fails.
    func typeAsTranscribed(_ group: String) -> String {
        switch Syscall.read(path("kernel/iommu_groups/\(group)/type")) {
        case .success(let text): return text.hasSuffix("\n") ? String(text.dropLast()) : text
        case .failure(let e): return "<\(ErrnoName.name(e.code))>"
        }
    }
}
