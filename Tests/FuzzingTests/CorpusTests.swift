import Foundation
import Fuzzing
import Testing

/// The fuzz corpus on every `make test`, without the fuzzer runtime: each
/// committed input (Tests/FuzzCorpus/<target>/) through its target, and
/// the inputs of bugs not fixed yet, which must still show their bug (once
/// one is fixed its test fails: move its input into the corpus).
@Suite struct CorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzCorpus").path

    @Test(arguments: FuzzTarget.allCases)
    func everyCorpusInputKeepsItsProperties(_ target: FuzzTarget) throws {
        let paths = CorpusFiles.paths(Self.corpus + "/" + target.rawValue)
        #expect(paths.count >= 5, "the \(target.rawValue) corpus has \(paths.count) inputs")
        for path in paths {
            let findings = target.run(try CorpusFiles.contents(of: path))
            #expect(findings.isEmpty, "\(path): \(findings.map(\.description).joined(separator: "; "))")
        }
    }

    @Test(arguments: KnownBug.all)
    func knownBugIsStillFound(_ bug: KnownBug) {
        withKnownIssue(Comment(rawValue: bug.name)) {
            for finding in bug.target.run(bug.input) { Issue.record(Comment(rawValue: finding.description)) }
        } matching: { issue in
            issue.comments.contains { comment in bug.findings.contains { comment.rawValue.contains($0) } }
        }
    }
}

/// An input that shows a bug that is not fixed yet, and what its finding says.
struct KnownBug: Sendable, CustomTestStringConvertible {
    let name: String
    let target: FuzzTarget
    let input: [UInt8]
    /// Texts of which the finding contains one.
    let findings: [String]

    var testDescription: String { name }

    init(_ name: String, _ target: FuzzTarget, _ input: String, finding: String...) {
        self.name = name
        self.target = target
        self.input = Array(input.utf8)
        self.findings = finding
    }

    init(_ name: String, _ target: FuzzTarget, bytes: [UInt8], finding: String...) {
        self.name = name
        self.target = target
        self.input = bytes
        self.findings = finding
    }

    static let all: [KnownBug] = [
        // Issue 10, bug 1: an injected EPROBE_DEFER ends a type store, and
        // the FUSE reply carries 517.
        KnownBug("issue 10 bug 1: EPROBE_DEFER from a type store", .store, #"""
            {"verb":"inject","point":"attach","errno":"EPROBE_DEFER","times":1,"probability":1.0}
            >kernel/iommu_groups/0/type identity\n
            """#, finding: "errno 517"),
        // Issue 10, bug 1 (its control side): the same errno in a reply.
        KnownBug("issue 10 bug 1: EPROBE_DEFER in a control reply", .control, #"""
            {"verb":"inject","point":"attach","errno":"EPROBE_DEFER","times":1,"probability":1.0}
            {"verb":"vfio-attach","container":"c1","group":0}
            """#, finding: "names EPROBE_DEFER"),
        // Issue 10, bugs 2 and 1: a failed domain allocation at rescan leaves
        // group 10 without a default domain (the dump does not load), and a
        // bind then ends in EPROBE_DEFER.
        KnownBug("issue 10 bugs 2 and 1: rescan with a failed domain allocation", .store, #"""
            @qemu-q35-alt
            >devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/remove 1
            {"verb":"inject","point":"domain-alloc","errno":"ENOMEM","times":1,"probability":1.0}
            >bus/pci/rescan 1
            >bus/pci/drivers/nvme/bind 0000:04:00.0
            """#, finding: "group 10 has no default domain", "errno 517", "the dump does not load"),
        // Issue 10, bug 6: bytes that are not UTF-8 in a string of a
        // description decode (as U+FFFD).
        KnownBug("issue 10 bug 6: a description that is not UTF-8", .decoder,
                 bytes: Array(#"{"kernel":{"command_line":"intel_iommu=on "#.utf8) + [0xff] + Array(#""},"iommu_units":[],"devices":[]}"#.utf8),
                 finding: "not UTF-8 decodes"),
        // Issue 10, bug 6 (the same parser): a request line that is not UTF-8.
        KnownBug("issue 10 bug 6: a request that is not UTF-8", .control,
                 bytes: Array(#"{"verb":"vfio-open-container","container":""#.utf8) + [0xff] + Array(#""}"#.utf8),
                 finding: "not UTF-8 is accepted"),
        // Found by the store target: driver_override_store keeps any text
        // (driver_set_override), but the state decoder refuses a '/'.
        KnownBug("driver_override with a slash does not round-trip", .store, #"""
            >devices/pci0000:00/0000:00:14.0/driver_override a/b\n
            """#, finding: "the dump does not load"),
        // Found by the store target: a removed device's group goes while a
        // VFIO container still holds it (in the kernel the vfio_group keeps
        // its iommu_group); a rescan then makes a new group with its id that
        // VFIO takes for the old one (owned, with owner_cnt 0).
        KnownBug("a VFIO container outlives its group", .store, #"""
            @qemu-q35-alt
            {"verb":"vfio-attach","container":"c1","group":15}
            >devices/pci0000:00/0000:00:06.0/0000:09:00.0/remove 1
            >bus/pci/rescan 1
            """#, finding: "VFIO container c1 holds group 15, which does not exist"),
    ]
}
