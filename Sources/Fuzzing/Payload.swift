/// The bytes a store step writes, written in its line with C-like escapes,
/// so that a payload can hold newlines, NULs and any other byte while the
/// corpus stays readable: `\n`, `\t`, `\0`, `\\` and `\xHH`. A backslash
/// before anything else stands for itself.
enum Payload {
    static func unescaped(_ text: some Collection<UInt8>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        var rest = text[...]
        while let byte = rest.popFirst() {
            guard byte == backslash, let next = rest.first else {
                bytes.append(byte)
                continue
            }
            switch next {
            case UInt8(ascii: "n"): bytes.append(0x0a)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "0"): bytes.append(0)
            case backslash: bytes.append(backslash)
            case UInt8(ascii: "x"):
                let digits = rest.dropFirst().prefix(2)
                guard digits.count == 2, let value = UInt8(String(decoding: digits, as: UTF8.self), radix: 16) else {
                    bytes.append(byte)
                    continue
                }
                bytes.append(value)
                rest = rest.dropFirst(3)
                continue
            default:
                bytes.append(byte)
                continue
            }
            rest = rest.dropFirst()
        }
        return bytes
    }

    /// The text of a step's line for a message: printable ASCII as it is
    /// (a backslash too: the line's escapes are its own), the rest escaped.
    static func escaped(_ bytes: some Sequence<UInt8>) -> String {
        var text = ""
        for byte in bytes {
            switch byte {
            case 0x09: text += "\\t"
            case 0: text += "\\0"
            case 0x20..<0x7f: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
        }
        return text
    }

    private static let backslash = UInt8(ascii: "\\")
}
