/// JSON text from a `JSON` value, in two layouts: one line for the control
/// socket's JSON-lines protocol, and an indented one for dumps that people
/// read and edit. Both are deterministic, so a value written, parsed and
/// written again gives the same text (a dump round trip compares equal).
extension JSON {
    /// One line without spaces: `{"ok":true,"lines":["..."]}`.
    public var compactText: String {
        var out = ""
        write(to: &out, spaced: false)
        return out
    }

    /// The layout of a machine description: containers with nested
    /// containers take one line per member or element, and everything
    /// inside an array element stays on the element's line (one device,
    /// unit or group per line). Ends with a newline.
    public var prettyText: String {
        var out = ""
        writePretty(to: &out, indent: "")
        out += "\n"
        return out
    }

    private var isScalar: Bool {
        switch self {
        case .array, .object: false
        default: true
        }
    }

    private func writePretty(to out: inout String, indent: String) {
        let inner = indent + "  "
        switch self {
        case .object(let members) where !members.allSatisfy(\.value.isScalar):
            out += "{\n"
            for (index, member) in members.enumerated() {
                out += inner
                Self.writeString(member.key, to: &out)
                out += ": "
                member.value.writePretty(to: &out, indent: inner)
                out += index == members.count - 1 ? "\n" : ",\n"
            }
            out += indent + "}"
        case .array(let elements) where !elements.allSatisfy(\.isScalar):
            out += "[\n"
            for (index, element) in elements.enumerated() {
                out += inner
                element.write(to: &out, spaced: true)
                out += index == elements.count - 1 ? "\n" : ",\n"
            }
            out += indent + "]"
        default:
            write(to: &out, spaced: true)
        }
    }

    /// The value on one line; `spaced` puts blanks inside brackets and
    /// after separators (`{ "a": [ 1, 2 ] }`).
    private func write(to out: inout String, spaced: Bool) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .number(let text): out += text
        case .string(let text): Self.writeString(text, to: &out)
        case .array(let elements):
            guard !elements.isEmpty else { out += "[]"; return }
            out += spaced ? "[ " : "["
            for (index, element) in elements.enumerated() {
                if index > 0 { out += spaced ? ", " : "," }
                element.write(to: &out, spaced: spaced)
            }
            out += spaced ? " ]" : "]"
        case .object(let members):
            guard !members.isEmpty else { out += "{}"; return }
            out += spaced ? "{ " : "{"
            for (index, member) in members.enumerated() {
                if index > 0 { out += spaced ? ", " : "," }
                Self.writeString(member.key, to: &out)
                out += spaced ? ": " : ":"
                member.value.write(to: &out, spaced: spaced)
            }
            out += spaced ? " }" : "}"
        }
    }

    /// A string literal: quotes, backslashes and control characters are
    /// escaped (so a compact text never contains a newline), the rest is
    /// UTF-8 as is.
    private static func writeString(_ text: String, to out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
