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

/// The device roles of the guest's topology scripts (`guest/topology.sh`,
/// `guest/topology-alt.sh`: `NIC1=0000:01:00.0  # ...`): the addresses the
/// scenario scripts use where a line does not print them.
enum GuestRoles {
    static let std = load("topology.sh")
    static let alt = load("topology-alt.sh")

    private static func load(_ script: String) -> [String: String] {
        let text = (try? OracleFixtures.text("guest/" + script)) ?? ""
        var roles: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let assignment = line.prefix { $0 != " " && $0 != "\t" && $0 != "#" }
            let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, isAddress(parts[1]) { roles[parts[0]] = parts[1] }
        }
        return roles
    }

    /// `DDDD:BB:DD.F`.
    static func isAddress(_ text: String) -> Bool {
        let c = Array(text.utf8)
        guard c.count == 12, c[4] == UInt8(ascii: ":"), c[7] == UInt8(ascii: ":"), c[10] == UInt8(ascii: ".") else { return false }
        return c.enumerated().allSatisfy { i, b in [4, 7, 10].contains(i) || (b >= 48 && b <= 57) || (b >= 97 && b <= 102) }
    }
}
