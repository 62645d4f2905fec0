import IOMMUCore
import Topology

/// The machine's state before an operation, for the property that a
/// failed operation leaves it as it was ("bad input of any kind gets a
/// clear errno and leaves state unchanged"). Armed faults are left out: a
/// fault that fires is used up, whatever the operation does with it.
struct StateWitness {
    private let before: [JSON.Member]

    init(_ machine: Machine) { before = Self.members(machine) }

    /// Nil if `machine` is in the state it was in; else what changed, each
    /// member of the state with the entries it lost (-) and gained (+).
    func change(_ machine: Machine) -> String? {
        let after = Self.members(machine)
        guard after != before else { return nil }
        let keys = (before + after).map(\.key).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        return keys.compactMap { key -> String? in
            let old = Self.entries(before, key), new = Self.entries(after, key)
            guard old != new else { return nil }
            let lost = old.filter { !new.contains($0) }.map { "-" + $0.compactText }
            let gained = new.filter { !old.contains($0) }.map { "+" + $0.compactText }
            return key + ": " + (lost + gained).joined(separator: " ")
        }.joined(separator: "; ")
    }

    private static func members(_ machine: Machine) -> [JSON.Member] {
        guard case .object(let members) = StateEncoder.state(of: machine) else { return [] }
        return members.filter { $0.key != "faults" }
    }

    /// A member's array entries (a scalar as one entry; none if absent).
    private static func entries(_ members: [JSON.Member], _ key: String) -> [JSON] {
        guard let value = members.first(where: { $0.key == key })?.value else { return [] }
        return value.arrayValue ?? [value]
    }
}
