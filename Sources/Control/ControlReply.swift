import Topology

/// The server's lines: a reply per request, `{"ok":true, ...}` or
/// `{"ok":false,"errno":"EPERM","message":"..."}`, and during a trace one
/// `{"event":"..."}` per event.
enum ControlReply {
    enum Key: String {
        case ok, errno, message, lines, document, event, value, viable, faults
        case containerSet = "container_set"
    }

    static func success(_ members: [(Key, JSON)] = []) -> JSON {
        .object([JSON.Member(Key.ok.rawValue, .bool(true))] + members.map { JSON.Member($0.0.rawValue, $0.1) })
    }

    static func failure(_ failure: ControlFailure) -> JSON {
        .object([JSON.Member(Key.ok.rawValue, .bool(false)), JSON.Member(Key.errno.rawValue, .string(failure.errnoName)),
                 JSON.Member(Key.message.rawValue, .string(failure.message))])
    }

    static func event(_ line: String) -> JSON {
        .object([JSON.Member(Key.event.rawValue, .string(line))])
    }

    /// A reply as the client reads it: the reply itself when `ok` is true,
    /// the failure it reports otherwise.
    static func check(_ reply: JSON) throws(ControlFailure) -> JSON {
        switch reply[Key.ok.rawValue] {
        case .bool(true)?:
            return reply
        case .bool(false)?:
            throw ControlFailure(errnoName: reply[Key.errno.rawValue]?.stringValue ?? "EIO",
                                 message: reply[Key.message.rawValue]?.stringValue ?? "(no message)")
        default:
            throw ControlFailure(.protocolError, "the server's reply has no \"ok\": \(reply.compactText)")
        }
    }
}
