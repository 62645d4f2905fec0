/// A parsed JSON value: machine descriptions, and the control socket's
/// requests and replies.
///
/// Numbers keep their text: the format needs exact 64-bit integers (reserved
/// region bounds), which a `Double` cannot hold. Objects keep their members
/// in document order, repeated keys included, so the decoder can name them.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSON])
    case object([Member])

    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: JSON

        public init(_ key: String, _ value: JSON) {
            self.key = key
            self.value = value
        }
    }
}

extension JSON {
    /// Parses one document (RFC 8259, strict).
    public static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSON {
        try bytes.withUnsafeBufferPointer { buffer throws(JSONSyntaxError) in try JSONParser.parse(buffer) }
    }

    /// An integer, as a number.
    public static func integer(_ value: some BinaryInteger) -> JSON { .number(String(value)) }

    /// The first member called `key` of an object; nil for a missing key
    /// and for anything but an object.
    public subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// The text of a string value.
    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    /// The value of an integer number that fits in an `Int`.
    public var intValue: Int? {
        if case .number(let text) = self { return Int(text) }
        return nil
    }

    /// The value of any number.
    public var doubleValue: Double? {
        if case .number(let text) = self { return Double(text) }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    public var arrayValue: [JSON]? {
        if case .array(let elements) = self { return elements }
        return nil
    }
}

/// Malformed JSON: what was wrong, at which byte of the input.
public struct JSONSyntaxError: Error, CustomStringConvertible {
    public var offset: Int
    public var reason: String

    /// `byte 12: unexpected '}' where a value should start`.
    public var description: String { "byte \(offset + 1): \(reason)" }

    /// The 1-based line and column (in characters) of `offset` in `bytes`,
    /// for the message a person fixes the file from.
    func lineAndColumn(in bytes: UnsafeBufferPointer<UInt8>) -> (line: Int, column: Int) {
        var line = 1, column = 1
        for byte in bytes[..<min(offset, bytes.count)] {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                // UTF-8 continuation bytes do not start a character.
                column += 1
            }
        }
        return (line, column)
    }
}

/// A strict RFC 8259 parser over UTF-8 bytes.
///
/// Hand-written rather than `JSONSerialization`, which took 1.9 s to parse a
/// 100,000-device machine on Linux, cannot hold exact 64-bit integers, and
/// words its errors differently on each platform.
struct JSONParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var position = 0
    /// Members and elements of the containers being parsed, innermost last.
    /// Each container is copied out at its end into an array of exactly its
    /// size: one allocation per container instead of one per doubling.
    private var pendingMembers: [JSON.Member] = []
    private var pendingElements: [JSON] = []

    /// Deeper documents are rejected before they can exhaust the stack;
    /// the machine format itself nests five levels.
    static let maximumDepth = 512

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONSyntaxError) -> JSON {
        var parser = JSONParser(bytes: bytes)
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.unexpected("after the document") }
        return value
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    private mutating func value(depth: Int) throws(JSONSyntaxError) -> JSON {
        guard depth <= Self.maximumDepth else { throw failure("nested deeper than \(Self.maximumDepth) levels") }
        skipWhitespace()
        guard let byte = peek() else { throw unexpected("where a value should start") }
        switch byte {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw unexpected("where a value should start")
        }
    }

    private mutating func object(depth: Int) throws(JSONSyntaxError) -> JSON {
        position += 1
        skipWhitespace()
        if consume("}") { return .object([]) }
        let first = pendingMembers.count
        repeat {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw unexpected("where a key should start") }
            let key = try string()
            skipWhitespace()
            guard consume(":") else { throw unexpected("after a key (expected ':')") }
            pendingMembers.append(JSON.Member(key, try value(depth: depth + 1)))
            skipWhitespace()
        } while consume(",")
        guard consume("}") else { throw unexpected("after an object member (expected ',' or '}')") }
        let members = Array(pendingMembers[first...])
        pendingMembers.removeSubrange(first...)
        return .object(members)
    }

    private mutating func array(depth: Int) throws(JSONSyntaxError) -> JSON {
        position += 1
        skipWhitespace()
        if consume("]") { return .array([]) }
        let first = pendingElements.count
        repeat {
            pendingElements.append(try value(depth: depth + 1))
            skipWhitespace()
        } while consume(",")
        guard consume("]") else { throw unexpected("after an array element (expected ',' or ']')") }
        let elements = Array(pendingElements[first...])
        pendingElements.removeSubrange(first...)
        return .array(elements)
    }

    /// A string, from its opening quote. Strings without escapes (nearly
    /// all of a machine description) are decoded straight from the input.
    ///
    /// The text must be UTF-8 (RFC 8259 §8.1): a malformed sequence is an
    /// error at its first byte, never replaced by U+FFFD.
    private mutating func string() throws(JSONSyntaxError) -> String {
        let opening = position
        position += 1
        let start = position
        while let byte = peek(), byte != UInt8(ascii: "\\"), byte >= 0x20 {
            if byte == UInt8(ascii: "\"") {
                let text = UnsafeBufferPointer(rebasing: bytes[start..<position])
                guard let string = String(validating: text, as: UTF8.self) else { throw malformedUTF8(in: start..<position) }
                position += 1
                return string
            }
            position += 1
        }
        // Escapes only add well-formed UTF-8: the runs between them are checked.
        try checkUTF8(start..<position)
        var decoded = Array(bytes[start..<position])
        var run = position
        while let byte = peek() {
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                try checkUTF8(run..<position - 1)
                return String(decoding: decoded, as: UTF8.self)
            case UInt8(ascii: "\\"):
                try checkUTF8(run..<position - 1)
                try unescape(into: &decoded)
                run = position
            case ..<0x20:
                position -= 1
                throw failure("control character in a string (escape it)")
            default: decoded.append(byte)
            }
        }
        position = opening
        throw failure("unterminated string")
    }

    /// Throws at the first byte of `range` that is not well-formed UTF-8.
    private mutating func checkUTF8(_ range: Range<Int>) throws(JSONSyntaxError) {
        guard String(validating: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self) == nil else { return }
        throw malformedUTF8(in: range)
    }

    /// The error at the first malformed sequence of `range`, which has one.
    private mutating func malformedUTF8(in range: Range<Int>) -> JSONSyntaxError {
        var parser = Unicode.UTF8.ForwardParser()
        var input = UnsafeBufferPointer(rebasing: bytes[range]).makeIterator()
        var offset = range.lowerBound
        while case .valid(let scalar) = parser.parseScalar(from: &input) { offset += scalar.count }
        position = offset
        return failure("invalid UTF-8 in a string (byte 0x" + String(bytes[offset], radix: 16) + "); the file must be UTF-8")
    }

    /// One escape sequence, after its backslash.
    private mutating func unescape(into decoded: inout [UInt8]) throws(JSONSyntaxError) {
        let escape = position - 1
        guard let byte = peek() else { throw failure("unterminated string") }
        position += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(byte)
        case UInt8(ascii: "b"): decoded.append(0x08)
        case UInt8(ascii: "f"): decoded.append(0x0C)
        case UInt8(ascii: "n"): decoded.append(0x0A)
        case UInt8(ascii: "r"): decoded.append(0x0D)
        case UInt8(ascii: "t"): decoded.append(0x09)
        case UInt8(ascii: "u"):
            var code = try hexQuad()
            if (0xD800..<0xDC00).contains(code) {
                // A high surrogate must be followed by an escaped low one.
                guard consume("\\"), consume("u") else { throw unpairedSurrogate(at: escape) }
                let low = try hexQuad()
                guard (0xDC00..<0xE000).contains(low) else { throw unpairedSurrogate(at: escape) }
                code = 0x10000 + (code - 0xD800) << 10 + (low - 0xDC00)
            }
            guard let scalar = Unicode.Scalar(code) else { throw unpairedSurrogate(at: escape) }
            UTF8.encode(scalar) { decoded.append($0) }
        default:
            position = escape
            throw failure("invalid escape sequence")
        }
    }

    private mutating func unpairedSurrogate(at escape: Int) -> JSONSyntaxError {
        position = escape
        return failure("unpaired UTF-16 surrogate in a \\u escape")
    }

    /// The four hex digits of a `\u` escape.
    private mutating func hexQuad() throws(JSONSyntaxError) -> UInt32 {
        var code: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = peek().flatMap(hexDigitValue) else { throw unexpected("in a \\u escape (expected 4 hex digits)") }
            code = code << 4 | UInt32(digit)
            position += 1
        }
        return code
    }

    /// A number, kept as its text (validated against the JSON grammar).
    private mutating func number() throws(JSONSyntaxError) -> String {
        let start = position
        _ = consume("-")
        if !consume("0") { try digits() }
        if consume(".") { try digits() }
        if consume("e") || consume("E") {
            _ = consume("+") || consume("-")
            try digits()
        }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
    }

    private mutating func digits() throws(JSONSyntaxError) {
        let start = position
        while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { position += 1 }
        guard position > start else { throw unexpected("in a number (expected a digit)") }
    }

    private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let start = position
        for expected in UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount) {
            guard peek() == expected else {
                position = start
                throw unexpected("where a value should start")
            }
            position += 1
        }
    }

    private mutating func skipWhitespace() {
        while let byte = peek(),
              byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\t") {
            position += 1
        }
    }

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    private mutating func consume(_ character: Unicode.Scalar) -> Bool {
        guard peek() == UInt8(ascii: character) else { return false }
        position += 1
        return true
    }

    private func failure(_ reason: String) -> JSONSyntaxError {
        JSONSyntaxError(offset: position, reason: reason)
    }

    /// "unexpected 'x' <context>", naming what is at the current position.
    private func unexpected(_ context: String) -> JSONSyntaxError {
        let found: String
        switch peek() {
        case nil: found = "end of input"
        case let byte? where (0x21..<0x7F).contains(byte): found = "'" + String(UnicodeScalar(byte)) + "'"
        case let byte?: found = "byte 0x" + String(byte, radix: 16)
        }
        return failure("unexpected " + found + " " + context)
    }
}

/// The value of one ASCII hex digit (either case), nil for anything else.
func hexDigitValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}
