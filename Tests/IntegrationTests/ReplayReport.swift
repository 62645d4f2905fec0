/// Why a transcript line is not compared.
///
/// Guest-internal lines report the guest itself, not the kernel's sysfs or
/// IOMMU behaviour: its boot and module loads, its device drivers' hardware
/// messages, DMA checks through its NICs and NVMe controller, `/dev` nodes,
/// NVMe admin commands and its own rate limiter's clock. Every other line
/// must be compared; a skip of any other kind fails the replay.
struct SkipReason: Hashable, Comparable {
    var text: String
    var guestInternal: Bool

    static func guest(_ text: String) -> SkipReason { SkipReason(text: text, guestInternal: true) }
    /// A line the replay could not perform or compare: a failure.
    static func gap(_ text: String) -> SkipReason { SkipReason(text: text, guestInternal: false) }

    static func < (a: SkipReason, b: SkipReason) -> Bool { a.text < b.text }
}

/// Per section: the lines it has, the lines compared and matched, the lines
/// skipped with their reasons; and the checks that no line passes unseen.
struct ReplayReport {
    struct Section {
        var name: String
        /// Transcript lines of the section (each counted once).
        var lines: Set<Int> = []
        var compared: Set<Int> = []
        var mismatched: Set<Int> = []
        var skipped: [SkipReason: Set<Int>] = [:]
        /// Guest lines that iommufs's rate limiter provably suppressed
        /// (counted as compared and matched).
        var suppressed: Set<Int> = []

        var guestInternal: Set<Int> { skipped.filter(\.key.guestInternal).values.reduce(into: []) { $0.formUnion($1) } }
        /// Lines that are neither compared nor skipped as guest-internal.
        var uncovered: Set<Int> { lines.subtracting(compared).subtracting(guestInternal) }
        /// Observations: the lines that are not guest-internal.
        var observations: Int { lines.subtracting(guestInternal).count }
        var matched: Int { compared.subtracting(mismatched).count }
    }

    private(set) var sections: [Section] = []
    private var position: [String: Int] = [:]
    private(set) var mismatches: [String] = []

    private mutating func section(_ line: TranscriptLine) -> Int {
        if let i = position[line.section] { return i }
        position[line.section] = sections.count
        sections.append(Section(name: line.section))
        return sections.count - 1
    }

    mutating func note(_ line: TranscriptLine) { sections[section(line)].lines.insert(line.number) }

    mutating func skip(_ line: TranscriptLine, _ reason: SkipReason) {
        let s = section(line)
        sections[s].lines.insert(line.number)
        sections[s].skipped[reason, default: []].insert(line.number)
    }

    mutating func compare(_ line: TranscriptLine, expected: String, actual: String) {
        let s = section(line)
        sections[s].lines.insert(line.number)
        sections[s].compared.insert(line.number)
        if expected != actual {
            sections[s].mismatched.insert(line.number)
            mismatches.append("line \(line.number) [\(line.section)] \(line.step): expected \(expected), got \(actual)")
        }
    }

    /// A guest line whose call site iommufs's rate limiter was provably
    /// suppressing at that step: compared, and matched.
    mutating func matchSuppressed(_ line: TranscriptLine) {
        compare(line, expected: line.text, actual: line.text)
        sections[section(line)].suppressed.insert(line.number)
    }

    mutating func merge(_ other: ReplayReport) {
        for s in other.sections {
            let i = position[s.name] ?? { position[s.name] = sections.count; sections.append(Section(name: s.name)); return sections.count - 1 }()
            sections[i].lines.formUnion(s.lines)
            sections[i].compared.formUnion(s.compared)
            sections[i].mismatched.formUnion(s.mismatched)
            sections[i].suppressed.formUnion(s.suppressed)
            for (r, n) in s.skipped { sections[i].skipped[r, default: []].formUnion(n) }
        }
        mismatches += other.mismatches
    }

    /// What makes the replay fail besides mismatches: a line neither
    /// compared nor guest-internal, a section with observations that
    /// compared none.
    var coverageProblems: [String] {
        sections.flatMap { s -> [String] in
            var problems: [String] = []
            if s.observations > 0 && s.compared.isEmpty { problems.append("section \(s.name) has \(s.observations) observations and compared none") }
            let missing = s.uncovered.sorted()
            if !missing.isEmpty {
                let reasons = s.skipped.filter { !$0.key.guestInternal }.keys.sorted().map(\.text)
                problems.append("section \(s.name): \(missing.count) lines neither compared nor guest-internal (lines \(missing.prefix(8).map(String.init).joined(separator: ", "))"
                                + (reasons.isEmpty ? ")" : "; \(reasons.joined(separator: "; ")))"))
            }
            return problems
        }
    }

    var compared: Int { sections.map(\.compared.count).reduce(0, +) }
    var matched: Int { sections.map(\.matched).reduce(0, +) }
    var skipped: Int { sections.map { $0.skipped.values.map(\.count).reduce(0, +) }.reduce(0, +) }

    func summary(label: String) -> String {
        var out = ["\(label): \(matched)/\(compared) observations match, \(skipped) lines skipped"]
        for s in sections {
            var line = "\(label) \(s.name.isEmpty ? "preamble" : s.name): compared \(s.compared.count), matched \(s.matched)"
            if !s.suppressed.isEmpty { line += " (\(s.suppressed.count) of them suppressed by iommufs's rate limiter at that step)" }
            let skips = s.skipped.sorted { $0.key < $1.key }
            line += ", skipped \(skips.map(\.value.count).reduce(0, +))"
            if !skips.isEmpty { line += ": " + skips.map { "\($0.value.count) (\($0.key.text))" }.joined(separator: ", ") }
            out.append(line)
        }
        let problems = coverageProblems
        if !problems.isEmpty { out.append("coverage:"); out += problems.map { "  " + $0 } }
        if !mismatches.isEmpty {
            out.append("first differences:")
            out += mismatches.prefix(20).map { "  " + $0 }
        }
        return out.joined(separator: "\n")
    }
}
