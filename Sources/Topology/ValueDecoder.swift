import IOMMUCore

/// How one JSON value becomes a `T`. The format's scalar kinds are static
/// members, so a field reads as `fields.required(.vendor, .unsigned(bits: 16))`.
struct ValueDecoder<T> {
    let decode: (JSON) throws(Problem) -> T

    init(_ decode: @escaping (JSON) throws(Problem) -> T) {
        self.decode = decode
    }

    /// The elements in order, each problem placed at its index.
    static func array<Element>(of element: ValueDecoder<Element>) -> Self where T == [Element] {
        Self { json throws(Problem) in
            guard case .array(let elements) = json else { throw Problem.mismatch("an array", json) }
            var decoded: [Element] = []
            decoded.reserveCapacity(elements.count)
            for (index, value) in elements.enumerated() {
                decoded.append(try inside(.index(index)) { () throws(Problem) in try element.decode(value) })
            }
            return decoded
        }
    }

    /// `wrapped`, or nil for null: for keys that must be present but may
    /// say "none".
    static func nullable<Wrapped>(_ wrapped: ValueDecoder<Wrapped>) -> Self where T == Wrapped? {
        Self { json throws(Problem) in
            if case .null = json { return nil }
            return try wrapped.decode(json)
        }
    }

    /// One of the names in `table`, which also lists the accepted names in
    /// the error: `unknown region type "mis" (expected one of: ...)`.
    static func choice(_ table: [(name: String, value: T)], _ what: String) -> Self {
        Self { json throws(Problem) in
            let text = try ValueDecoder<String>.string.decode(json)
            guard let entry = table.first(where: { $0.name == text }) else {
                throw Problem("unknown " + what + " " + quoted(text) + " (expected one of: "
                              + table.map(\.name).joined(separator: ", ") + ")")
            }
            return entry.value
        }
    }
}

extension ValueDecoder where T == Bool {
    static var bool: Self {
        Self { json throws(Problem) in
            guard case .bool(let value) = json else { throw Problem.mismatch("true or false", json) }
            return value
        }
    }
}

extension ValueDecoder where T == String {
    static var string: Self {
        Self { json throws(Problem) in
            guard case .string(let text) = json else { throw Problem.mismatch("a string", json) }
            return text
        }
    }

    /// A name that becomes a sysfs directory or file name: non-empty, without
    /// '/', and not "." or "..".
    static var name: Self {
        Self { json throws(Problem) in
            let text = try string.decode(json)
            guard !text.isEmpty, text != ".", text != "..", !text.utf8.contains(UInt8(ascii: "/")) else {
                throw Problem(quoted(text) + " cannot be a sysfs name (it must be non-empty, without '/')")
            }
            return text
        }
    }
}

extension ValueDecoder where T == UInt64 {
    /// A non-negative integer of at most `bits` bits, written either as a
    /// JSON integer or as a "0x" hex string (as sysfs prints ids).
    static func unsigned(bits: Int) -> Self {
        Self { json throws(Problem) in
            let value: UInt64
            switch json {
            case .number(let text):
                guard let parsed = UInt64(text) else { throw Problem.mismatch("a non-negative integer", json) }
                value = parsed
            case .string(let text):
                guard let parsed = parseHex(text) else {
                    throw Problem(quoted(text) + " is not a hex number (expected \"0x\" and at most 16 hex digits)")
                }
                value = parsed
            default:
                throw Problem.mismatch("an integer or a \"0x\" hex string", json)
            }
            guard bits >= 64 || value >> UInt64(bits) == 0 else {
                throw Problem(json.summary + " does not fit in \(bits) bits")
            }
            return value
        }
    }
}

/// "0x"-prefixed hexadecimal (digits in either case) without allocating;
/// nil for anything else, including more than 64 bits.
func parseHex(_ text: String) -> UInt64? {
    var text = text
    return text.withUTF8 { bytes -> UInt64? in
        guard bytes.count > 2, bytes.count <= 18, bytes[0] == UInt8(ascii: "0"),
              bytes[1] | 0x20 == UInt8(ascii: "x") else { return nil }
        var value: UInt64 = 0
        for byte in bytes[2...] {
            guard let digit = hexDigitValue(byte) else { return nil }
            value = value << 4 | UInt64(digit)
        }
        return value
    }
}

extension ValueDecoder where T == PCIAddress {
    /// A PCI address: `dddd:bb:dd.f`, or `bb:dd.f` in domain 0000.
    static var address: Self {
        Self { json throws(Problem) in
            let text = try ValueDecoder<String>.string.decode(json)
            guard let address = parsePCIAddress(text) else {
                throw Problem(quoted(text) + " is not a PCI address (expected dddd:bb:dd.f)")
            }
            return address
        }
    }
}

/// Parses `dddd:bb:dd.f` or `bb:dd.f` (hex digits in either case) straight
/// from the UTF-8 bytes. Not `PCIAddress.init?(_:)`: this also takes the
/// short form, and a big machine has an address per device, so it neither
/// splits nor allocates.
func parsePCIAddress(_ text: String) -> PCIAddress? {
    var text = text
    return text.withUTF8 { bytes -> PCIAddress? in
        var position = 0
        /// `digits` hex digits, then `separator` if one is given.
        func field(_ digits: Int, then separator: Unicode.Scalar?) -> UInt16? {
            var value: UInt16 = 0
            for _ in 0..<digits {
                guard position < bytes.count, let digit = hexDigitValue(bytes[position]) else { return nil }
                value = value << 4 | UInt16(digit)
                position += 1
            }
            if let separator {
                guard position < bytes.count, bytes[position] == UInt8(ascii: separator) else { return nil }
                position += 1
            }
            return value
        }
        let domain: UInt16?
        switch bytes.count {
        case 12: domain = field(4, then: ":")
        case 7: domain = 0
        default: return nil
        }
        guard let domain, let bus = field(2, then: ":"), let device = field(2, then: "."),
              let function = field(1, then: nil), device < 32, function < 8 else { return nil }
        return PCIAddress(domain: domain, bus: UInt8(bus), device: UInt8(device), function: UInt8(function))
    }
}
