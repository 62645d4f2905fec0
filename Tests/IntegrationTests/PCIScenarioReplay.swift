import Foundation
import Glibc

/// Replays a transcript of scenario-pci.sh (`*-default-alt-pci.txt`: the
/// oracle's second machine and its PCI/driver-core scenario) through a
/// mount of `qemu-q35-alt`.
/// Each driver-core step is the same sysfs write through the mount. Steps
/// the mount cannot perform (config space, NVMe admin commands) are
/// skipped with the reason.
struct PCIScenarioReplay: TranscriptReplay {
    var position: ReplayPosition
    /// scenario-pci.sh prints `none` for a device without a group.
    static let noGroup = "none"
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

    init(_ position: ReplayPosition) { self.position = position }

    /// Descriptors of a removal case are opened before its first step.
    mutating func prepare(at index: Int) {
        let line = lines[index]
        if line.kind == "remove-case" || line.kind == "fd" || (line.kind == "remove" && lines[index...].prefix(3).contains { $0.kind == "remove-case" }) {
            if lines[index...].prefix(40).contains(where: { $0.kind == "fd" }) { openDescriptors(from: index) }
        }
    }

    /// The guest's exit closes its descriptors.
    mutating func finishReplay() {
        for fd in fds.values where fd >= 0 { close(fd) }
    }

    // MARK: the mount

    /// `driver_override` as the transcript prints it (a 4094-byte run of A as `<A*4094>`).
    private func override(_ d: String) -> String {
        guard case .success(let t) = Syscall.read(dev(d, "driver_override")) else { return "<unreadable>" }
        let body = t.hasSuffix("\n") ? String(t.dropLast()) : t
        if body.count > 100, body.allSatisfy({ $0 == "A" }) { return "\"<A*\(body.count)>\\n\"" }
        return Transcript.escape(Array(t.utf8))
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

    private func groupsLine() -> String {
        Syscall.list(p("kernel/iommu_groups")).compactMap(Int.init).sorted()
            .map { "\($0):" + members(String($0)).joined(separator: ",") }.joined(separator: " ")
    }

    // MARK: steps

    mutating func step(_ line: TranscriptLine) {
        let f = line.fields
        let words = line.step.split(separator: " ", omittingEmptySubsequences: false)
        switch line.kind {
        case "meta" where line.step.hasPrefix("meta pci-buses="):
            compare(line, expected: String(line.step.dropFirst(15)), actual: Syscall.list(p("class/pci_bus")).sorted().joined(separator: " "))
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
        case "pcidev":
            let d = String(words[1])
            let expected = words.dropFirst(2).joined(separator: " ")
            let rm = Syscall.lstat(dev(d, "reset_method")) == nil ? "<no reset_method file>" : text(dev(d, "reset_method"))
            let total = Syscall.lstat(dev(d, "sriov_totalvfs")) == nil ? "-" : text(dev(d, "sriov_totalvfs"))
            let actual = "vendor=\(text(dev(d, "vendor"))) device=\(text(dev(d, "device"))) class=\(text(dev(d, "class"))) driver=\(driver(d)) group=\(group(of: d)) reset=\(Syscall.lstat(dev(d, "reset")) == nil ? "no" : "yes") reset_method=\"\(rm)\" sriov_totalvfs=\(total)"
            compare(line, expected: expected, actual: actual)
        case "groups":
            compare(line, expected: line.text.components(separatedBy: ": ").dropFirst().joined(separator: ": "), actual: groupsLine())
        case "mode":
            let actual = lstatOutcome(sys(String(words[1])))
            if actual == "err ENOENT", line.result != actual { return skip(line, Self.notPresented) }
            compare(line, expected: line.result!, actual: actual)
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
                let out = IntegrationTests.run("/usr/bin/setpriv", setprivNobody + ["/bin/bash", "-c", "exec 3>>\"$1\"", "_", path])
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
        default: if !commonStep(line) { skip(line, .gap("unknown line kind \(line.kind)")) }
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
        compare(line, expected: result(line), actual: readOutcome(fd: fd))
    }

    /// `readwo uid=65534 read|write PATH`: the step run by user nobody.
    /// A read is dd's with 4096-byte blocks, which reads as the guest's
    /// reader does; its `F+P records in` are the reads that returned data.
    private mutating func asNobody(_ line: TranscriptLine, _ words: [Substring]) {
        let path = sys(String(words[3]))
        guard words[2] == "read" else {
            return compare(line, expected: result(line), actual: privWrite(path, "1", setpriv: setprivNobody, afterOpen: false))
        }
        let out = IntegrationTests.run("/usr/bin/setpriv", setprivNobody + ["/bin/dd", "if=" + path, "bs=4096"])
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
                if let target = linkName(pf, vf), driver(target) != "none" {
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
