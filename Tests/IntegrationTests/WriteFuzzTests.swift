import Foundation
import Testing
import Topology

/// Seeded random and edge-case writes to every writable file of each
/// built-in machine, interleaved with fault injection; after every round
/// the machine's invariants (see `WriteFuzzer`). Settings from the
/// environment:
/// - `IOMMUFS_FUZZ_SECONDS`: how long each machine is fuzzed (default 3;
///   `make fuzz-writes` runs longer);
/// - `IOMMUFS_FUZZ_SEED`: the seed (default fixed, so that `make test` is
///   deterministic; every run prints the one it used, to replay it);
/// - `IOMMUFS_FUZZ_BOUND`: the seconds any one call may take (default 5);
/// - `IOMMUFS_FUZZ_LOG`: a path; PATH.MACHINE gets every step and its outcome.
@Suite("Write fuzz") struct WriteFuzzTests {
    static let machines = Topology.builtinMachines.map(\.name)

    @Test("seeded writes to every writable file, with fault injection; every call returns and the invariants hold",
          arguments: machines)
    func fuzz(machine: String) throws {
        let settings = WriteFuzzer.Settings(
            seed: environment("IOMMUFS_FUZZ_SEED").flatMap { UInt64($0) } ?? 0x1_0f_0220,
            seconds: environment("IOMMUFS_FUZZ_SECONDS").flatMap { Double($0) } ?? 3,
            bound: .seconds(environment("IOMMUFS_FUZZ_BOUND").flatMap { Double($0) } ?? 5),
            log: environment("IOMMUFS_FUZZ_LOG"))
        print("write fuzz \(machine): seed \(settings.seed) for \(settings.seconds) s (IOMMUFS_FUZZ_SEED=\(settings.seed) replays it)")
        var fuzzer = WriteFuzzer(machine: machine, settings: settings)
        let summary = try fuzzer.run()
        print(summary)
        #expect(summary.overBound.isEmpty, "calls over the bound: \(summary.overBound)")
        #expect(summary.writes >= 100, "\(summary)")
        #expect(summary.injections > 0, "\(summary)")
    }
}

/// The environment variable's value, nil if unset or empty.
func environment(_ name: String) -> String? {
    guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
    return value
}
