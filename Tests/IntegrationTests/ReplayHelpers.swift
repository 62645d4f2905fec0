import Foundation
import Glibc

/// Where a replay is: the mount, the transcript, the line being replayed,
/// the report, the kernel-log comparison and the `ls -lan` listing being
/// compared with `ls-la` lines; the state both dialects keep alike.
struct ReplayPosition {
    let mount: MountedMachine
    let lines: [TranscriptLine]
    var index = 0
    var report = ReplayReport()
    /// Compares each step's `kmsg:` lines; nil: they are skipped.
    var kernelLog: KernelLogComparison?
    var lsLaReplay = LsLaReplay()

    init(mount: MountedMachine, lines: [TranscriptLine], kernelLog: KernelLogComparison?) {
        self.mount = mount
        self.lines = lines
        self.kernelLog = kernelLog
    }

    /// The kernel log after the step at `index`, compared with its `kmsg:` lines.
    mutating func compareKernelLog() { kernelLog?.compareStep(at: index, of: lines, into: &report) }

    /// After the last line: what the mount logged that no line shows.
    mutating func finishKernelLog() { kernelLog?.finish(lines.last!, into: &report) }
}

/// What both scenario dialects share: the report, the mount, the line being
/// replayed, the replay loop with its kernel-log comparison, how the mount
/// is read and written, and the line kinds both scripts print the same way.
/// Each dialect (`StdScenarioReplay`, `PCIScenarioReplay`) supplies its own
/// steps and the hooks where its script's order differs.
protocol TranscriptReplay {
    var position: ReplayPosition { get set }
    /// What the dialect's `grp` helper prints for a device without a group.
    static var noGroup: String { get }

    /// Performs one transcript line on the mount.
    mutating func step(_ line: TranscriptLine)
    /// Before the line at `index`: what the guest did before printing it.
    mutating func prepare(at index: Int)
    /// Whether the guest's script reads the kernel log after printing `line`.
    func guestReadsKernelLog(after line: TranscriptLine) -> Bool
    /// After the line and its kernel-log comparison.
    mutating func finishStep(_ line: TranscriptLine)
    /// After the last line: what the guest's exit releases.
    mutating func finishReplay()
}

extension TranscriptReplay {
    var mount: MountedMachine { position.mount }
    var lines: [TranscriptLine] { position.lines }
    var index: Int { position.index }
    var report: ReplayReport {
        get { position.report }
        set { position.report = newValue }
    }
    var kernelLog: KernelLogComparison? {
        get { position.kernelLog }
        set { position.kernelLog = newValue }
    }

    mutating func prepare(at index: Int) {}
    func guestReadsKernelLog(after line: TranscriptLine) -> Bool { true }
    mutating func finishStep(_ line: TranscriptLine) {}
    mutating func finishReplay() {}

    /// Replays every line in order; after each step the guest's `kmsg`
    /// output is compared with what the mount logged.
    mutating func run() {
        while index < lines.count {
            let line = lines[index]
            report.note(line)
            prepare(at: index)
            step(line)
            if line.kind != "kmsg:" && guestReadsKernelLog(after: line) { position.compareKernelLog() }
            finishStep(line)
            position.index += 1
        }
        position.finishKernelLog()
        finishReplay()
    }

    mutating func skip(_ line: TranscriptLine, _ reason: SkipReason) { report.skip(line, reason) }

    mutating func compare(_ line: TranscriptLine, expected: String, actual: String) {
        report.compare(line, expected: expected, actual: actual)
    }

    // MARK: the mount

    /// `relative` under the mount.
    func p(_ relative: String) -> String { mount.path(relative) }
    /// A `/sys/...` path of the guest, under the mount.
    func sys(_ sysPath: String) -> String { p(String(sysPath.dropFirst(5))) }
    /// A file of a PCI device.
    func dev(_ d: String, _ file: String) -> String { p("bus/pci/devices/\(d)/\(file)") }
    func typePath(_ group: String) -> String { p("kernel/iommu_groups/\(group)/type") }

    func type(_ group: String) -> String { mount.typeAsTranscribed(group) }

    private func last(_ link: String?) -> String? { link.map { String($0.split(separator: "/").last!) } }
    /// The name a link of the device points to (`basename "$(readlink …)"`).
    func linkName(_ d: String, _ link: String) -> String? { last(Syscall.readlink(dev(d, link))) }
    func driver(_ d: String) -> String { linkName(d, "driver") ?? "none" }
    func group(of d: String) -> String { linkName(d, "iommu_group") ?? Self.noGroup }
    func members(_ group: String) -> [String] { Syscall.list(p("kernel/iommu_groups/\(group)/devices")).sorted() }

    /// A file's text without its final newline.
    func text(_ path: String) -> String {
        let t = Syscall.text(path) ?? "<unreadable>"
        return t.hasSuffix("\n") ? String(t.dropLast()) : t
    }

    /// One open + one write(2) + close as the guest's `sysw` prints it:
    /// `ok N`, `ok N short len=L`, `err E` or `err E@open`.
    func sysw(_ path: String, _ bytes: [UInt8], flags: Int32 = O_WRONLY, offset: Int? = nil) -> String {
        let fd = open(path, flags)
        guard fd >= 0 else { return "err \(ErrnoName.name(errno))@open" }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { b in
            offset.map { pwrite(fd, b.baseAddress, b.count, off_t($0)) } ?? Glibc.write(fd, b.baseAddress, b.count)
        }
        if n < 0 { return "err \(ErrnoName.name(errno))" }
        return n < bytes.count ? "ok \(n) short len=\(bytes.count)" : "ok \(n)"
    }

    func writeText(_ path: String, _ text: String) -> String { sysw(path, Array(text.utf8)) }

    /// Reads like the oracle's reader: `chunk`-byte read(2)s until EOF, or one pread.
    func readOutcome(_ path: String, chunk: Int = 4096, offset: Int? = nil) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "err \(ErrnoName.name(errno))@open" }
        defer { close(fd) }
        return readOutcome(fd: fd, chunk: chunk, offset: offset)
    }

    /// `ok len=N reads=R data="..."` of reads from an open descriptor.
    func readOutcome(fd: Int32, chunk: Int = 4096, offset: Int? = nil) -> String {
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

    /// `ok mode=… uid=… gid=… size=… nlink=…` or `err ERRNO`, as the guest's `lst` prints lstat(2).
    func lstatOutcome(_ path: String) -> String {
        guard let st = Syscall.lstat(path) else { return "err \(ErrnoName.name(errno))" }
        return "ok mode=\(String(st.st_mode, radix: 8)) uid=\(st.st_uid) gid=\(st.st_gid) size=\(st.st_size) nlink=\(st.st_nlink)"
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

    // MARK: the line kinds both scripts print alike

    /// Performs `line` if both dialects print its kind the same way;
    /// false for a kind the dialect handles itself.
    mutating func commonStep(_ line: TranscriptLine) -> Bool {
        let f = line.fields
        switch line.kind {
        case "meta", "modload": skip(line, .guest("describes the guest boot"))
        case "kmsg:": break  // compared after the step that printed it
        case "ls-la":
            let observed = position.lsLaReplay.observe(lines, at: index, on: mount)
            compare(line, expected: observed.expected, actual: observed.actual)
        case "readdir":
            let observed = ReaddirOrder.observe(line, on: mount)
            compare(line, expected: observed.expected, actual: observed.actual)
        case "topology":
            let d = f["bdf"]!
            compare(line, expected: "vendor=\(f["vendor"]!) device=\(f["device"]!) class=\(f["class"]!)",
                    actual: "vendor=\(text(dev(d, "vendor"))) device=\(text(dev(d, "device"))) class=\(text(dev(d, "class")))")
        case "group":
            let g = String(line.text.split(separator: " ")[1])
            compare(line, expected: "type=\(f["type"]!) devices=\(line.text.components(separatedBy: "devices=")[1])",
                    actual: "type=\(type(g)) devices=\(members(g).joined(separator: " "))")
        case "final":
            let g = f["group"]!
            compare(line, expected: "type=\(f["type"]!) drivers=\(f["drivers"]!)",
                    actual: "type=\(type(g)) drivers=\(members(g).map { "\($0)=\(driver($0))," }.joined())")
        case "node": node(line)
        case "link": link(line)
        case "write": typeWrite(line)
        default: return false
        }
        return true
    }

    /// `node path=/sys/... kind=K mode=M uid=U gid=G size=S nlink=N [target=...] [content=...]`.
    private mutating func node(_ line: TranscriptLine) {
        let f = line.fields
        let sysPath = f["path"]!
        let path = sys(sysPath)
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
            return compare(line, expected: target, actual: Syscall.readlink(sys(String(words[1]))) ?? "<none>")
        }
        guard let d = f["dev"] else { return skip(line, .gap("unparsed link line")) }
        // `iommu_group=$(readlink …)` prints nothing for a missing link; the
        // others fall back to `<none>`.
        let names = ["iommu_group", "iommu", "driver"]
        let actual = names.map { name in
            "\(name)=\(Syscall.readlink(dev(d, name)) ?? (name == "iommu_group" ? "" : "<none>"))"
        }
        compare(line, expected: names.map { "\($0)=\(f[$0] ?? "?")" }.joined(separator: " "),
                actual: actual.joined(separator: " "))
    }

    /// `write group=G state=S data="..." -> R; type=T`, with the extras' special forms.
    private mutating func typeWrite(_ line: TranscriptLine) {
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
}

/// setpriv's arguments for the guest's `uid=65534` steps (user nobody).
let setprivNobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]

extension MountedMachine {
    /// A group's `type` as the transcripts print it: the text without its
    /// newline, or `<ERRNO>` when the read fails.
    func typeAsTranscribed(_ group: String) -> String {
        switch Syscall.read(path("kernel/iommu_groups/\(group)/type")) {
        case .success(let text): return text.hasSuffix("\n") ? String(text.dropLast()) : text
        case .failure(let e): return "<\(ErrnoName.name(e.code))>"
        }
    }

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
