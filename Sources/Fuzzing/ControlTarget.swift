import Control
import IOMMUCore
import SystemPackage
import Topology

/// The control socket's request handling: each line of the input (after an
/// optional `@MACHINE [PROFILE]` header, see `Script`) is a request line
/// as a client sends it, answered by the handler a server's sessions use.
///
/// Properties: every line gets one well-formed reply; a refusal names an
/// errno a process can receive (1...511), says why and leaves the
/// machine's state as it was; a line that is not UTF-8 is refused; the
/// model's invariants hold after each request; a dump round-trips.
enum ControlTarget {
    static func run(_ input: [UInt8]) -> [Finding] {
        let script = Script(input)
        return script.withMachine { machine in
            let handler = ControlHandler(machine: machine, document: script.document.text)
            for index in script.steps.indices {
                let findings = answerFindings(handler, Script.request(script.steps[index]), profile: script.profile)
                    + machine.invariantViolations().map(Finding.init)
                if !findings.isEmpty { return findings.map { $0.at(script.label(index)) } }
            }
            return []
        }
    }

    /// Sends `line` to `handler`; what is wrong with its answer.
    static func answerFindings(_ handler: ControlHandler, _ line: [UInt8], profile: KernelProfile?) -> [Finding] {
        let witness = StateWitness(handler.machine)
        guard case .reply(let reply) = handler.answer(line) else {
            // The session acknowledges and streams; nothing to check here.
            return []
        }
        var findings = replyFindings(reply)
        if reply["ok"] == .bool(false), let change = witness.change(handler.machine) {
            findings.append(Finding("a refused request changed the state: \(change)"))
        }
        if String(validating: line, as: UTF8.self) == nil && reply["ok"] != .bool(false) {
            findings.append(Finding("a request that is not UTF-8 is accepted: \(reply.compactText.prefix(200))"))
        }
        if reply["ok"] == .bool(true), let document = reply["document"] {
            findings += RoundTrip.findings(dump: document, profile: profile)
        }
        return findings
    }

    /// A reply is one line of JSON that reads back as itself, an object
    /// that starts with `"ok"`; a failure is exactly `ok`, `errno` (a name
    /// for 1...511: anything above is kernel-internal and no process can
    /// receive it) and a non-empty `message`.
    static func replyFindings(_ reply: JSON) -> [Finding] {
        let text = reply.compactText
        var findings: [Finding] = []
        if text.utf8.contains(UInt8(ascii: "\n")) { findings.append(Finding("the reply is more than one line: \(text.prefix(200))")) }
        if (try? JSON.parse(Array(text.utf8))) != reply { findings.append(Finding("the reply does not read back as itself: \(text.prefix(200))")) }
        guard case .object(let members) = reply, let first = members.first, first.key == "ok", case .bool(let ok) = first.value else {
            return findings + [Finding("the reply is not an object starting with a boolean \"ok\": \(text.prefix(200))")]
        }
        guard !ok else { return findings }
        guard members.map(\.key) == ["ok", "errno", "message"], let name = reply["errno"]?.stringValue,
              let message = reply["message"]?.stringValue else {
            return findings + [Finding("a refusal is not {ok, errno, message}: \(text.prefix(200))")]
        }
        if let errno = Errno(kernelName: name), errno.rawValue > 0 && errno.rawValue < 512 {
            if message.isEmpty { findings.append(Finding("a refusal with \(name) says nothing")) }
        } else {
            findings.append(Finding("a refusal names \(name), which no process can receive: \(text.prefix(200))"))
        }
        return findings
    }
}
