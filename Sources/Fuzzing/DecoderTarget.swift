import IOMMUCore
import Sysfs
import Topology

/// `iommufs mount --topology FILE` up to serving: the bytes of a file
/// decoded, booted with its state restored, and its sysfs tree built.
///
/// Properties: the decoder returns a document or an error that says what
/// is wrong; text that is not UTF-8 is an error with its position (a
/// description is UTF-8, RFC 8259 §8.1); a document boots or fails with an
/// error, and a booted machine keeps the model's invariants, has a
/// consistent tree, and round-trips through a dump.
enum DecoderTarget {
    static func run(_ input: [UInt8]) -> [Finding] {
        let isUTF8 = String(validating: input, as: UTF8.self) != nil
        let document: TopologyDocument
        do throws(TopologyError) {
            document = try TopologyDocument(input, source: "input")
        } catch {
            if error.reason.isEmpty { return [Finding("the decoder fails without a reason: \(error)")] }
            if !isUTF8 && error.location.isEmpty { return [Finding("a description that is not UTF-8 fails without a position: \(error)")] }
            return []
        }
        if !isUTF8 {
            return [Finding("a description that is not UTF-8 decodes (its bad bytes must be an error with their position)")]
        }
        let machine: Machine
        do throws(TopologyError) {
            machine = try document.boot()
        } catch {
            return error.reason.isEmpty ? [Finding("the boot fails without a reason: \(error)")] : []
        }
        let view = MachineTree(machine: machine)
        defer {
            Teardown.release(view)
            Teardown.release(machine)
        }
        let findings = machine.invariantViolations().map { Finding("after boot: " + $0) } + TreeChecks.findings(view)
        return findings + RoundTrip.findings(dump: document.dump(machine), profile: nil)
    }
}
