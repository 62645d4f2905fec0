import Foundation
import Glibc

/// Replays a transcript of scenario.sh (the oracle's first machine and its
/// IOMMU-group scenario): each transcript step on the mount, in order,
/// keeping the machine in the state the guest was in, including the steps
/// the guest performed without printing them.
struct StdScenarioReplay: TranscriptReplay {
    var position: ReplayPosition
    /// scenario.sh's `grp` (`basename "$(readlink …/iommu_group)"`) prints
    /// nothing for a device without a group.
    static let noGroup = ""
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

    init(_ position: ReplayPosition) { self.position = position }

    /// Whether scenario.sh runs `kmsg` after printing `line`: not after
    /// `settype` (its log is discarded after the `rebound:` line) nor after
    /// `override` (the next step's `kmsg` shows what it logged).
    func guestReadsKernelLog(after line: TranscriptLine) -> Bool {
        line.kind != "settype" && line.kind != "override"
    }

    /// settype's `kmsg >/dev/null`: the guest discarded what its unbinds,
    /// write and binds logged.
    mutating func finishStep(_ line: TranscriptLine) {
        if line.kind == "settype", line.text.contains(" rebound:") { kernelLog?.discard() }
    }

    /// The guest's `unbind DEV >/dev/null` and `bind DEV DRV >/dev/null`:
    /// the step, its line and its `kmsg` all discarded.
    private mutating func silently(_ action: (inout Self) -> Void) {
        action(&self)
        kernelLog?.discard()
    }

    // MARK: steps

    mutating func step(_ line: TranscriptLine) {
        let f = line.fields
        switch line.kind {
        case "check": skip(line, .guest("a real DMA check in the guest (netdev up/down, NVMe live)"))
        case "misc": misc(line)
        case "pcidev":
            let dev = String(line.text.split(separator: " ")[1])
            let expected = line.text.split(separator: " ").dropFirst(2).joined(separator: " ")
            let actual = "vendor=\(text(self.dev(dev, "vendor"))) device=\(text(self.dev(dev, "device"))) class=\(text(self.dev(dev, "class"))) driver=\(driver(dev)) group=\(group(of: dev)) driver_override=\(text(self.dev(dev, "driver_override")))"
            compare(line, expected: expected, actual: actual)
        case "group-begin":
            let g = f["group"]!
            compare(line, expected: "devices=\(f["devices"]!) type=\(f["type"]!)",
                    actual: "devices=\(members(g).joined(separator: ",")) type=\(type(g))")
        case "group-end":
            let g = f["group"]!
            compare(line, expected: "type=\(f["type"]!) drivers=\(f["drivers"]!)",
                    actual: "type=\(type(g)) drivers=\(members(g).map { "\($0)=\(driver($0))," }.joined())")
        case "trans-final":
            let g = f["group"]!
            let dev = members(g).first!
            compare(line, expected: "type=\(f["type"]!) driver=\(f["driver"]!)", actual: "type=\(type(g)) driver=\(driver(dev))")
        case "read": read(line)
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
        default: if !commonStep(line) { skip(line, .gap("unknown line kind \(line.kind)")) }
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
        case "lstat": actual = lstatOutcome(k(words[1]))
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

        if step.hasPrefix("lstat type after") {
            let expected = String(line.text[line.text.range(of: ": ")!.upperBound...])
            return compare(line, expected: expected, actual: Syscall.lstat(type) == nil ? "no such file" : lstatOutcome(type))
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
            let out = IntegrationTests.run("/usr/bin/setpriv", setprivNobody + ["cat", file])
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
            setpriv = setprivNobody
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
