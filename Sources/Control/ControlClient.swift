import IOMMUCore
import Glibc
import SystemPackage
import Topology

/// The client end of the control socket, as `iommufs ctl` uses it: one
/// request and its reply per call.
public final class ControlClient {
    private let channel: LineChannel
    private let path: String

    /// Connects to the socket at `path`.
    public init(socketPath path: String) throws(ControlFailure) {
        self.channel = LineChannel(fd: try ControlSocket.connect(to: path))
        self.path = path
    }

    /// Runs a request whose reply carries nothing (every verb but `dmesg`,
    /// `dump` and `trace`).
    public func perform(_ request: ControlRequest) throws(ControlFailure) {
        _ = try call(request)
    }

    /// Runs a request whose reply is a number: what the ioctl returned
    /// (`vfio-api-version`, `vfio-check-extension`).
    public func value(_ request: ControlRequest) throws(ControlFailure) -> Int {
        guard let value = try call(request)[ControlReply.Key.value.rawValue]?.intValue else {
            throw ControlFailure(.protocolError, "the reply has no \"value\"")
        }
        return value
    }

    /// `VFIO_GROUP_GET_STATUS` of the open group `group`.
    public func vfioGroupStatus(_ group: Int) throws(ControlFailure) -> VFIOGroupStatus {
        let reply = try call(.vfioGroupStatus(group: group))
        guard let viable = reply[ControlReply.Key.viable.rawValue]?.boolValue,
              let containerSet = reply[ControlReply.Key.containerSet.rawValue]?.boolValue else {
            throw ControlFailure(.protocolError, "the status reply lacks \"viable\" or \"container_set\"")
        }
        return VFIOGroupStatus(viable: viable, containerSet: containerSet)
    }

    /// The kernel log ring, `[    1.234567] text` per line, oldest first;
    /// with `clear`, later calls get only newer lines (`dmesg -c`).
    public func dmesg(clear: Bool = false) throws(ControlFailure) -> [String] {
        try call(.dmesg(clear: clear))[ControlReply.Key.lines.rawValue]?.arrayValue?.compactMap(\.stringValue) ?? []
    }

    /// The faults armed now, each an object of `FaultCoding`'s members.
    public func armedFaults() throws(ControlFailure) -> [JSON] {
        try call(.listFaults)[ControlReply.Key.faults.rawValue]?.arrayValue ?? []
    }

    /// The machine as a topology document with its current state.
    public func dump() throws(ControlFailure) -> JSON {
        guard let document = try call(.dump)[ControlReply.Key.document.rawValue] else {
            throw ControlFailure(.protocolError, "the dump reply has no document")
        }
        return document
    }

    /// Starts a trace: once this returns, every later event is delivered to
    /// `nextEvent`, until `count` of them (nil: until this client closes).
    public func startTrace(count: Int?) throws(ControlFailure) {
        _ = try call(.trace(count: count))
    }

    /// The next event line of a trace (`type-changed group=3 from=DMA-FQ
    /// to=identity`); nil when the server ended the stream. A failure the
    /// server ends the stream with (a client too slow to keep up is dropped
    /// with ENOBUFS) is thrown.
    public func nextEvent() throws(ControlFailure) -> String? {
        guard let reply = try readReply() else { return nil }
        if let line = reply[ControlReply.Key.event.rawValue]?.stringValue { return line }
        _ = try ControlReply.check(reply)
        throw ControlFailure(.protocolError, "expected an event, got \(reply.compactText)")
    }

    private func call(_ request: ControlRequest) throws(ControlFailure) -> JSON {
        // A failed send may still have a reply waiting (a refusal).
        let sent = channel.send(request.json)
        let reply: JSON?
        do {
            reply = try readReply()
        } catch {
            if sent { throw error }
            reply = nil
        }
        guard let reply else { throw ControlFailure(.connectionReset, "the server at \(path) closed the connection without a reply") }
        return try ControlReply.check(reply)
    }

    /// The next line, parsed; nil at the end of the stream.
    private func readReply() throws(ControlFailure) -> JSON? {
        let line: [UInt8]?
        do {
            line = try channel.readLine()
        } catch {
            guard case .failed(let errno) = error else { preconditionFailure("replies have no length limit") }
            throw ControlFailure(errno, "reading from \(path): \(errno)")
        }
        guard let line else { return nil }
        do {
            return try JSON.parse(line)
        } catch {
            throw ControlFailure(.protocolError, "the server's reply is not JSON (\(error))")
        }
    }
}
