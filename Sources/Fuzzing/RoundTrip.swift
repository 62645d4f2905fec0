import IOMMUCore
import Topology

/// Every state a machine reaches must survive `ctl dump` and `--topology`:
/// the dump, loaded and booted again, is a machine in the same state.
enum RoundTrip {
    /// What goes wrong when `dump` (a document with a `state`, as `dump`
    /// makes it) is loaded and booted with `profile`, or when the machine
    /// it boots is in another state than the dump says.
    static func findings(dump: JSON, profile: KernelProfile?) -> [Finding] {
        guard let state = dump["state"] else { return [Finding("the dump has no state: \(dump.compactText.prefix(200))")] }
        let machine: Machine
        do throws(TopologyError) {
            machine = try TopologyDocument(Array(dump.compactText.utf8), source: "the dump").boot(profile: profile)
        } catch {
            return [Finding("the dump does not load: \(error)")]
        }
        defer { Teardown.release(machine) }
        let again = StateEncoder.state(of: machine)
        guard again == state else {
            return [Finding("the dump loads into another state: dumped \(state.compactText), loaded \(again.compactText)")]
        }
        return []
    }
}
