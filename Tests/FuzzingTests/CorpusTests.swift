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

    static let all: [KnownBug] = [
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
