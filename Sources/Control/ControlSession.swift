import Glibc
import SystemPackage
import Topology

/// One client connection, on a thread of its own: the peer check, then one
/// reply per request line until the client hangs up. A `trace` request
/// turns the rest of the connection into its event stream.
struct ControlSession {
    let channel: LineChannel
    let handler: ControlHandler
    /// Who may talk to the daemon besides root: the user running it.
    let serverUID: uid_t

    /// Requests are small; a longer line is refused and ends the session.
    static let maximumRequestLength = 1 << 20

    func run() {
        let refusal = peerRefusal()
        while true {
            let line: [UInt8]
            do {
                guard let next = try channel.readLine() else { return }
                line = next
            } catch {
                if case .tooLong = error {
                    channel.send(ControlReply.failure(.badRequest("a request is one line of at most \(Self.maximumRequestLength) bytes")))
                }
                return
            }
            // A refused peer gets the refusal as the reply to its first
            // request (read first, so that closing leaves nothing unread,
            // which would reset the connection before the reply is read).
            if let refusal {
                channel.send(ControlReply.failure(refusal))
                return
            }
            switch handler.answer(line) {
            case .reply(let reply): channel.send(reply)
            case .trace(let count): return trace(count: count)
            }
        }
    }

    /// SO_PEERCRED: only root and the daemon's own user get in (the socket
    /// is 0600, but a chmod or a directory handed to others must not let
    /// anybody drive the machine).
    private func peerRefusal() -> ControlFailure? {
        var credentials = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        guard getsockopt(channel.fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else {
            return ControlFailure(Errno(rawValue: Glibc.errno), "cannot tell who is connecting (SO_PEERCRED)")
        }
        guard credentials.uid != 0 && credentials.uid != serverUID else { return nil }
        let allowed = serverUID == 0 ? "only root may" : "only root and uid \(serverUID) may"
        return ControlFailure(.notPermitted, "uid \(credentials.uid) may not use this control socket (\(allowed))")
    }

    /// Subscribes, acknowledges, then sends each event until `count` were
    /// sent or the client hangs up.
    private func trace(count: Int?) {
        guard let stream = EventStream() else {
            channel.send(ControlReply.failure(ControlFailure(.tooManyOpenFiles, "cannot trace: out of file descriptors")))
            return
        }
        let events = handler.machine.subsystem.events
        let token = events.subscribe { stream.push($0.description) }
        defer { events.unsubscribe(token) }
        guard channel.send(ControlReply.success()) else { return }
        var remaining = count ?? .max
        while remaining > 0 {
            var ready = [pollfd(fd: channel.fd, events: Int16(POLLIN), revents: 0),
                         pollfd(fd: stream.readEnd, events: Int16(POLLIN), revents: 0)]
            guard poll(&ready, 2, -1) >= 0 || Glibc.errno == EINTR else { return }
            // The client sends nothing during a trace: readable means gone.
            if ready[0].revents != 0 { return }
            for line in stream.take().prefix(remaining) {
                guard channel.send(ControlReply.event(line)) else { return }
                remaining -= 1
            }
        }
    }
}

/// `struct ucred` (Glibc's module leaves it out: it needs _GNU_SOURCE).
private struct PeerCredentials {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
}
