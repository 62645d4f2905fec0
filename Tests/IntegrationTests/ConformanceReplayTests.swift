import Testing

/// Replays the real-kernel transcripts of `Fixtures/oracle` through a real
/// mount of a machine description built for each boot and compares every
/// observation. `make conformance` runs this suite (`swift test --filter Conformance`).
@Suite("Conformance", .serialized) struct ConformanceReplayTests {
    @Test("a real-kernel boot replayed through a mount of its machine", arguments: OracleBoot.all)
    func replay(_ boot: OracleBoot) throws {
        let lines = Transcript.parse(try OracleFixtures.text(boot.file))
        let report = try boot.withMount(lines) { m in
            let kernelLog = try KernelLogComparison(mount: m, lines: lines)
            defer { kernelLog.close() }
            let position = ReplayPosition(mount: m, lines: lines, kernelLog: kernelLog)
            var replay: any TranscriptReplay = boot.isPCIScenario ? PCIScenarioReplay(position) : StdScenarioReplay(position)
            replay.run()
            return replay.report
        }
        print(report.summary(label: boot.label))
        #expect(report.mismatches.isEmpty, "\(boot.label): \(report.mismatches.count) mismatches; first: \(report.mismatches.prefix(5).joined(separator: " | "))")
        #expect(report.coverageProblems.isEmpty, "\(boot.label): \(report.coverageProblems.joined(separator: " | "))")
    }
}
