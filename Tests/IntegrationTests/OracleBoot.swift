import Foundation
import Glibc
import Testing
import Topology

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
