import Foundation

/// One line of an oracle transcript (Fixtures/oracle/ORACLE.md): the
/// section it is in, its kind (the first word), the text before ` -> ` and
/// the observed result after it.
struct TranscriptLine: Sendable {
    var number: Int
    var section: String
    var kind: String
    var text: String

    /// `key=value` fields of the step (before ` -> `); a quoted value keeps its C escapes.
    var fields: [String: String] { TranscriptLine.fields(step) }

    /// The step: the text before ` -> ` (the whole line when there is none).
    var step: String {
        guard let range = text.range(of: " -> ") else { return text }
        return String(text[..<range.lowerBound])
    }

    /// The observed result: the text after the first ` -> `.
    var result: String? {
        guard let range = text.range(of: " -> ") else { return nil }
        return String(text[range.upperBound...])
    }

    /// `key=value` pairs; a value starting with `"` runs to the closing quote.
    static func fields(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        var chars = Substring(text)
        while !chars.isEmpty {
            chars = chars.drop { $0 == " " }
            guard let eq = chars.firstIndex(of: "="), !chars[..<eq].contains(" ") else {
                chars = chars.drop { $0 != " " }
                continue
            }
            let key = String(chars[..<eq])
            var rest = chars[chars.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                var end = rest.endIndex
                for i in rest.indices {
                    if escaped { escaped = false; continue }
                    if rest[i] == "\\" { escaped = true } else if rest[i] == "\"" { end = i; break }
                }
                value = "\"" + rest[..<end] + "\""
                chars = end < rest.endIndex ? rest[rest.index(after: end)...] : rest[end...]
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                value = String(rest[..<end])
                chars = rest[end...]
            }
            if result[key] == nil { result[key] = value }
        }
        return result
    }
}

enum Transcript {
    /// Parses a transcript: `section NAME` lines start sections; `#` lines are comments.
    static func parse(_ text: String) -> [TranscriptLine] {
        var section = "preamble"
        var lines: [TranscriptLine] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("section ") { section = String(line.dropFirst(8)); continue }
            let kind = String(line.prefix { $0 != " " })
            lines.append(TranscriptLine(number: index + 1, section: section, kind: kind, text: line))
        }
        return lines
    }

    /// The bytes of a C-escaped string: `"DMA\n"` (quotes optional).
    static func unescape(_ quoted: String) -> [UInt8] {
        var s = Substring(quoted)
        if s.hasPrefix("\"") && s.hasSuffix("\"") && s.count >= 2 { s = s.dropFirst().dropLast() }
        var bytes: [UInt8] = []
        var it = Array(s.utf8).makeIterator()
        while let c = it.next() {
            guard c == UInt8(ascii: "\\"), let e = it.next() else { bytes.append(c); continue }
            switch e {
            case UInt8(ascii: "n"): bytes.append(10)
            case UInt8(ascii: "r"): bytes.append(13)
            case UInt8(ascii: "t"): bytes.append(9)
            case UInt8(ascii: "0"): bytes.append(0)
            default: bytes.append(e)
            }
        }
        return bytes
    }

    /// The C escaping the transcript prints content with.
    static func escape(_ bytes: [UInt8]) -> String {
        var out = "\""
        for b in bytes {
            switch b {
            case 10: out += "\\n"
            case 13: out += "\\r"
            case 9: out += "\\t"
            case 0: out += "\\0"
            case UInt8(ascii: "\""): out += "\\\""
            case UInt8(ascii: "\\"): out += "\\\\"
            default: out += String(UnicodeScalar(b))
            }
        }
        return out + "\""
    }
}

/// errno names as the transcripts print them.
enum ErrnoName {
    static let table: [(Int32, String)] = [
        (EPERM, "EPERM"), (ENOENT, "ENOENT"), (EIO, "EIO"), (EBADF, "EBADF"), (ENOMEM, "ENOMEM"),
        (EACCES, "EACCES"), (EBUSY, "EBUSY"), (EEXIST, "EEXIST"), (ENODEV, "ENODEV"), (EISDIR, "EISDIR"),
        (EINVAL, "EINVAL"), (ENOTTY, "ENOTTY"), (ENOSPC, "ENOSPC"), (ERANGE, "ERANGE"), (EOPNOTSUPP, "EOPNOTSUPP"),
        (ENOTDIR, "ENOTDIR"), (EROFS, "EROFS"), (ENOSYS, "ENOSYS"), (ENOTEMPTY, "ENOTEMPTY"),
    ]
    static func name(_ code: Int32) -> String { table.first { $0.0 == code }?.1 ?? "E\(code)" }
    /// The name of the errno whose strerror text ends `message` (as bash prints it).
    static func fromMessage(_ message: String) -> String? {
        let line = message.split(separator: "\n").last.map(String.init) ?? message
        return table.first { line.hasSuffix(String(cString: strerror($0.0))) }?.1
    }
}
