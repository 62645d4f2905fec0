import Foundation

/// The real-kernel transcripts in `Fixtures/oracle` (see its README): found
/// beside this source file, so a clone anywhere replays them and nothing
/// outside the repository is read.
enum OracleFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/oracle").path

    /// A fixture that is not in the repository: a test failure naming it.
    struct Missing: Error, CustomStringConvertible {
        var path: String
        var description: String { "missing conformance fixture \(path) (see Tests/IntegrationTests/Fixtures/oracle/README.md)" }
    }

    /// The text of fixture `name` (e.g. `6.12-default.txt`).
    static func text(_ name: String) throws -> String {
        let path = directory + "/" + name
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Missing(path: path) }
        return text
    }
}
