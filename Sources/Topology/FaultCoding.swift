import IOMMUCore
import SystemPackage

/// An armed fault as the control protocol and the `state` section write
/// it: `point`, then `errno` (a kernel name, `ENOMEM`) or `stall_ms`, then
/// `times` (how many more shots) or `"always": true`, then `probability`
/// when it is below 1 and `skip` when it is above 0.
public enum FaultCoding {
    /// The member names.
    public enum Key: String, CaseIterable, Sendable {
        case point, errno, stallMs = "stall_ms", times, always, probability, skip
    }

    public static func members(_ point: FaultPoint, _ fault: FaultInjector.Fault) -> [JSON.Member] {
        var members = [JSON.Member(Key.point.rawValue, .string(point.rawValue))]
        switch fault.effect {
        case .fail(let errno): members.append(.init(Key.errno.rawValue, .string(errno.kernelName)))
        case .stall(let duration): members.append(.init(Key.stallMs.rawValue, .integer(milliseconds(duration))))
        }
        members.append(fault.remaining.map { .init(Key.times.rawValue, .integer($0)) } ?? .init(Key.always.rawValue, .bool(true)))
        if fault.probability < 1 { members.append(.init(Key.probability.rawValue, .number(String(fault.probability)))) }
        if fault.skip > 0 { members.append(.init(Key.skip.rawValue, .integer(fault.skip))) }
        return members
    }

    /// A stall's length in whole milliseconds, the unit the wire carries.
    public static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

extension FaultCoding.Key: FieldKey {
    static let byName = nameTable()
}

extension StateDecoder {
    /// An armed fault of the `faults` list (see `FaultCoding`).
    static func fault(_ json: JSON) throws(Problem) -> MachineState.ArmedFault {
        let fields = try Fields<FaultCoding.Key>(json)
        let points = FaultPoint.allCases.map { (name: $0.rawValue, value: $0) }
        let point = try fields.required(.point, .choice(points, "fault point"))
        let effect: FaultInjector.Effect
        if fields.has(.stallMs) {
            guard !fields.has(.errno) else { throw Problem("a fault has \"errno\" or \"stall_ms\", not both") }
            effect = .stall(.milliseconds(Int64(try fields.required(.stallMs, .unsigned(bits: 32)))))
        } else {
            let name = try fields.required(.errno, .string)
            guard let errno = Errno(kernelName: name) else {
                throw Problem("unknown errno \(quoted(name))", at: .key(FaultCoding.Key.errno.rawValue))
            }
            effect = .fail(errno)
        }
        let always = try fields.optional(.always, .bool) ?? false
        let times = try fields.optional(.times, .unsigned(bits: 31)).map { Int($0) }
        guard !(always && times != nil) else { throw Problem("a fault has \"times\" or \"always\", not both") }
        guard times != 0 else { throw Problem("\"times\" is at least 1", at: .key(FaultCoding.Key.times.rawValue)) }
        let probability = try fields.optional(.probability, .probability) ?? 1
        let skip = Int(try fields.optional(.skip, .unsigned(bits: 31)) ?? 0)
        return MachineState.ArmedFault(point: point, fault: .init(effect, remaining: always ? nil : times ?? 1,
                                                                  probability: probability, skip: skip))
    }
}

extension ValueDecoder where T == Double {
    /// A number from 0 to 1.
    static var probability: Self {
        Self { json throws(Problem) in
            guard let value = json.doubleValue, (0...1).contains(value) else { throw Problem.mismatch("a number from 0 to 1", json) }
            return value
        }
    }
}
