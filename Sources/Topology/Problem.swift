/// Why the decoder rejects a value, and the JSON path to it.
///
/// The path is built on the way out: each container that catches a problem
/// prepends its own step, so decoding a valid document never builds a path.
struct Problem: Error {
    enum Step {
        case key(String)
        case index(Int)
    }

    var path: [Step]
    var reason: String

    init(_ reason: String, at path: Step...) {
        self.path = path
        self.reason = reason
    }

    /// The same problem, one container further out.
    func under(_ step: Step) -> Problem {
        var outer = self
        outer.path.insert(step, at: 0)
        return outer
    }

    /// `devices[3].address`; empty for the document itself.
    var renderedPath: String {
        var text = ""
        for step in path {
            switch step {
            case .key(let key): text += (text.isEmpty ? "" : ".") + key
            case .index(let index): text += "[" + String(index) + "]"
            }
        }
        return text
    }

    /// "expected an object, found 42".
    static func mismatch(_ expected: String, _ found: JSON) -> Problem {
        Problem("expected " + expected + ", found " + found.summary)
    }
}

/// Runs `body`, placing any problem it reports under `step`.
func inside<T>(_ step: Problem.Step, _ body: () throws(Problem) -> T) throws(Problem) -> T {
    do {
        return try body()
    } catch {
        throw error.under(step)
    }
}

extension JSON {
    /// The value as a message shows it: scalars verbatim, containers by kind.
    var summary: String {
        switch self {
        case .null: "null"
        case .bool(let value): String(value)
        case .number(let text): text
        case .string(let text): quoted(text)
        case .array: "an array"
        case .object: "an object"
        }
    }
}

func quoted(_ text: String) -> String { "\"" + text + "\"" }

/// "0x" and lowercase hex digits, zero-padded to `digits`.
func hexLiteral(_ value: some BinaryInteger, digits: Int = 1) -> String {
    let text = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, digits - text.count)) + text
}
