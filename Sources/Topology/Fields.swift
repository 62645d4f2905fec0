/// The members of one JSON object, checked against the keys its place in the
/// format allows. Unknown and repeated keys are errors: a misspelt optional
/// key in a hand-edited machine would otherwise be silently ignored.
/// A key of the format: an enum whose raw values are the member names.
protocol FieldKey: RawRepresentable, CaseIterable, Hashable where RawValue == String {
    /// Every key by its name. `init(rawValue:)` compares the name with each
    /// case in turn; a device object has a dozen members and some thirty
    /// possible keys, and a big machine 100,000 devices.
    static var byName: [String: Self] { get }
}

extension FieldKey {
    /// The table for `byName`.
    static func nameTable() -> [String: Self] {
        Dictionary(uniqueKeysWithValues: allCases.map { ($0.rawValue, $0) })
    }
}

struct Fields<Key: FieldKey> {
    private let members: [JSON.Member]
    /// `members[i]`'s key: lookups compare enum cases, not strings (this
    /// runs for every object of a document that may have 100,000 devices).
    private let keys: [Key]

    init(_ value: JSON) throws(Problem) {
        guard case .object(let members) = value else { throw Problem.mismatch("an object", value) }
        var keys: [Key] = []
        keys.reserveCapacity(members.count)
        for member in members {
            guard let key = Key.byName[member.key] else {
                throw Problem("unknown key " + quoted(member.key) + " (expected one of: "
                              + Key.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            guard !keys.contains(key) else {
                throw Problem("key " + quoted(member.key) + " appears twice")
            }
            keys.append(key)
        }
        self.members = members
        self.keys = keys
    }

    /// Whether the object has `key` (null or not).
    func has(_ key: Key) -> Bool { keys.contains(key) }

    /// An optional key's decoded value; null counts as absent.
    func optional<T>(_ key: Key, _ decoder: ValueDecoder<T>) throws(Problem) -> T? {
        guard let value = self[key] else { return nil }
        if case .null = value { return nil }
        return try inside(.key(key.rawValue)) { () throws(Problem) in try decoder.decode(value) }
    }

    /// A required key's decoded value; the decoder decides whether null is allowed.
    func required<T>(_ key: Key, _ decoder: ValueDecoder<T>) throws(Problem) -> T {
        guard let value = self[key] else { throw Problem("missing key " + quoted(key.rawValue)) }
        return try inside(.key(key.rawValue)) { () throws(Problem) in try decoder.decode(value) }
    }

    private subscript(key: Key) -> JSON? {
        keys.firstIndex(of: key).map { members[$0].value }
    }
}
