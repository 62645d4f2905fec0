import Control
import IOMMUCore
import Sysfs
import SystemPackage
import Topology

/// Every sysfs store: writes to the writable attributes of a booted
/// machine's tree, as FUSE hands them to the tree (`OpenAttribute.write`),
/// with control requests between them. After an optional `@MACHINE
/// [PROFILE]` header (see `Script`), one step a line:
///
/// ```
/// >PATH[@OFFSET] PAYLOAD   write PAYLOAD (escaped, see `Payload`) as root
/// ~PATH[@OFFSET] PAYLOAD   the same without capabilities
/// {...}                    a control request (`ControlTarget`), e.g. an injected fault
/// ```
///
/// The attributes are found by walking the tree before each write, so a
/// new store is covered without naming it here. A PATH that names none of
/// them picks one by its hash, so that a mutated path still writes
/// somewhere. OFFSET is the file offset (binary attributes use it).
///
/// Properties, after each step: a store returns a byte count from 1 to
/// what was written (0 would make the writer loop) or an errno from 1 to
/// 511 (a FUSE reply with a larger one is rejected by the kernel and the
/// writer hangs); a failed store leaves the machine's state as it was;
/// the model's invariants hold. At the end, the tree follows the model and
/// the state round-trips through a dump.
enum StoreTarget {
    static func run(_ input: [UInt8]) -> [Finding] {
        let script = Script(input)
        return script.withMachine { machine in
            let view = MachineTree(machine: machine)
            defer { Teardown.release(view) }
            let handler = ControlHandler(machine: machine, document: script.document.text)
            // Walked again only after a step that may have changed the tree
            // (a failed store leaves the state as it was, which is checked).
            var files: [(path: String, node: Node)]?
            for index in script.steps.indices {
                let line = script.steps[index]
                var findings: [Finding]
                switch line.first {
                case UInt8(ascii: ">"), UInt8(ascii: "~"):
                    let attributes = files ?? TreeChecks.writableAttributes(view.tree)
                    let (stored, problems) = writeFindings(Write(line), attributes, machine)
                    files = stored ? nil : attributes
                    findings = problems
                case UInt8(ascii: "{"):
                    findings = ControlTarget.answerFindings(handler, Script.request(line), profile: script.profile)
                    files = nil
                default:
                    continue
                }
                findings += machine.invariantViolations().map(Finding.init)
                if !findings.isEmpty { return findings.map { $0.at(script.label(index)) } }
            }
            return TreeChecks.findings(view) + RoundTrip.findings(dump: script.document.dump(machine), profile: script.profile)
        }
    }

    /// One write step, parsed.
    struct Write {
        var path: String
        var offset: Int
        var payload: [UInt8]
        var caller: any Credentials

        init(_ line: ArraySlice<UInt8>) {
            caller = line.first == UInt8(ascii: "~") ? CapabilitySet([]) : FullyPrivileged()
            let rest = line.dropFirst()
            let target = rest.prefix { $0 != UInt8(ascii: " ") }
            payload = Payload.unescaped(rest.dropFirst(target.count + 1))
            let at = target.lastIndex(of: UInt8(ascii: "@"))
            path = String(decoding: target[..<(at ?? target.endIndex)], as: UTF8.self)
            offset = at.flatMap { Int(String(decoding: target[($0 + 1)...], as: UTF8.self)) } ?? 0
        }
    }

    /// Writes as `write` says; whether the store succeeded, and what is
    /// wrong with its outcome.
    private static func writeFindings(_ write: Write, _ files: [(path: String, node: Node)],
                                      _ machine: Machine) -> (stored: Bool, [Finding]) {
        guard !files.isEmpty else { return (false, [Finding("the tree has no writable attribute")]) }
        let file = files.first { $0.path == write.path } ?? files[Int(stableHash(write.path) % UInt64(files.count))]
        let what = "writing \(write.payload.count) bytes to \(file.path)"
        let witness = StateWitness(machine)
        let result = OpenAttribute.open(file.node, forReading: false, forWriting: true).flatMap { open in
            write.payload.withUnsafeBytes { open.write($0, caller: write.caller, offset: write.offset) }
        }
        switch result {
        case .success(let count):
            let written = min(write.payload.count, Attribute.pageSize)
            let least = written == 0 ? 0 : 1
            guard count >= least && count <= written else {
                return (true, [Finding("\(what) returned \(count), not a count from \(least) to \(written)")])
            }
            return (true, [])
        case .failure(let errno):
            var findings: [Finding] = []
            if errno.rawValue <= 0 || errno.rawValue >= 512 {
                findings.append(Finding("\(what) failed with errno \(errno.rawValue) (\(errno.kernelName)), which no writer can receive"))
            }
            if let change = witness.change(machine) {
                findings.append(Finding("\(what) failed with \(errno.kernelName) but changed the state: \(change)"))
            }
            return (false, findings)
        }
    }

    /// FNV-1a: the same attribute for the same text in every run.
    private static func stableHash(_ text: String) -> UInt64 {
        text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }
}
