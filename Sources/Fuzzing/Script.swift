import IOMMUCore
import Topology

/// The input of the control and store targets: lines, the first of which
/// may name the machine to boot.
///
/// ```
/// @qemu-q35-alt linux-6.1
/// >kernel/iommu_groups/4/type identity\n
/// {"verb":"inject","point":"attach","errno":"ENOMEM"}
/// ```
///
/// `@NAME [PROFILE]` boots the built-in machine `NAME` (`iommufs mount
/// --machine NAME`) with the kernel profile `PROFILE`; without it, or for
/// a name or profile that does not exist, the default machine with its
/// own profile. Every other line is one step; what a step means is the
/// target's.
struct Script {
    let machineName: String
    let document: TopologyDocument
    let profile: KernelProfile?
    /// The lines after the header, without their newlines.
    let steps: [ArraySlice<UInt8>]
    /// The line number of the first step (2 after a header).
    private let firstStepLine: Int

    /// The built-in machines, decoded once per process.
    private static let machines: [(name: String, document: TopologyDocument)] = Topology.builtinMachines.map {
        ($0.name, Topology.builtinMachine(named: $0.name)!)
    }

    init(_ input: [UInt8]) {
        var lines = input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)[...]
        var machine = Self.machines[0]
        var profile: KernelProfile?
        let hasHeader = lines.first?.first == UInt8(ascii: "@")
        if hasHeader, let header = lines.popFirst() {
            let words = header.dropFirst().split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            machine = words.first.flatMap { name in Self.machines.first { $0.name == name } } ?? machine
            profile = words.dropFirst().first.flatMap(KernelProfile.named)
        }
        self.machineName = machine.name
        self.document = machine.document
        self.profile = profile
        self.steps = Array(lines)
        self.firstStepLine = hasHeader ? 2 : 1
    }

    /// What `body` finds on the machine, booted and released afterwards,
    /// or that it did not boot (a built-in machine must). Its resets take
    /// no time: a fuzzer runs one input at a time, and the 100 ms a
    /// function reset lasts would be most of the run.
    func withMachine(_ body: (Machine) -> [Finding]) -> [Finding] {
        var spec = document.spec
        for index in spec.devices.indices { spec.devices[index].resetDuration = .zero }
        let machine: Machine
        do throws(MachineSpecError) {
            machine = try Machine(spec: spec, profile: profile)
        } catch {
            return [Finding("the built-in machine \(machineName) does not boot: \(error)")]
        }
        defer { Teardown.release(machine) }
        return body(machine)
    }

    /// The control request of a step as the handler gets it: the line,
    /// but with a stall (`stall_ms`) cut to 1 ms. One thread runs an input,
    /// so a stall can only delay it (up to a minute, which the fuzzer
    /// would take for a hang).
    static func request(_ line: ArraySlice<UInt8>) -> [UInt8] {
        let bytes = Array(line)
        guard String(validating: bytes, as: UTF8.self) != nil, case .object(var members)? = try? JSON.parse(bytes),
              let index = members.firstIndex(where: { $0.key == FaultCoding.Key.stallMs.rawValue }),
              let milliseconds = members[index].value.intValue, milliseconds > 1 else { return bytes }
        members[index].value = .integer(1)
        return Array(JSON.object(members).compactText.utf8)
    }

    /// A step as a finding shows it: its line number in the input and its
    /// text (escaped, and shortened when long).
    func label(_ index: Int) -> String {
        let text = steps[index]
        return "line \(firstStepLine + index) " + Payload.escaped(text.prefix(160)) + (text.count > 160 ? "..." : "")
    }
}
