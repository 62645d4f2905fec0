import Glibc
import IOMMUCore
import Logging
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
    /// Where a dropped trace client is reported.
    let logger: Logger

    /// Requests are small; a longer line is refused and ends the session.
    static let maximumRequestLength = 1 << 20

    func run() {
        let (peer, refusal) = admission()
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
            case .trace(let count): return trace(count: count, peer: peer)
            }
        }
    }

    /// Who is connecting (SO_PEERCRED), and the refusal if they may not:
    /// only root and the daemon's own user get in (the socket is 0600, but
    /// a chmod or a directory handed to others must not let anybody drive
    /// the machine).
    private func admission() -> (peer: PeerCredentials, refusal: ControlFailure?) {
        var peer = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        guard getsockopt(channel.fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) == 0 else {
            return (peer, ControlFailure(Errno(rawValue: Glibc.errno), "cannot tell who is connecting (SO_PEERCRED)"))
        }
        guard peer.uid != 0 && peer.uid != serverUID else { return (peer, nil) }
        let allowed = serverUID == 0 ? "only root may" : "only root and uid \(serverUID) may"
        return (peer, ControlFailure(.notPermitted, "uid \(peer.uid) may not use this control socket (\(allowed))"))
    }

    /// Subscribes, acknowledges, then sends each event until `count` were
    /// sent or the client hangs up. Sends never block (`TraceSender`): while
    /// the client does not read, events wait in the `EventStream`, and once
    /// that is full the client is dropped with a notice (`dropped`).
    private func trace(count: Int?, peer: PeerCredentials) {
        guard let stream = EventStream() else {
            channel.send(ControlReply.failure(ControlFailure(.tooManyOpenFiles, "cannot trace: out of file descriptors")))
            return
        }
        let events = handler.machine.subsystem.events
        let token = events.subscribe { stream.push($0) }
        defer { events.unsubscribe(token) }
        guard channel.send(ControlReply.success()) else { return }
        var sender = TraceSender(fd: channel.fd)
        var backlog: ArraySlice<MachineEvent> = []
        var remaining = count ?? .max
        while remaining > 0 {
            if stream.overflowed { return dropped(&sender, peer: peer) }
            var client = pollfd(fd: channel.fd, events: Int16(POLLIN), revents: 0)
            if sender.hasRoom {
                if backlog.isEmpty { backlog = stream.take()[...] }
                if !backlog.isEmpty {
                    let batch = backlog.prefix(min(remaining, TraceSender.batchSize))
                    backlog = backlog.dropFirst(batch.count)
                    guard sender.send(batch.map { ControlReply.event($0.description) }) else { return }
                    remaining -= batch.count
                    continue
                }
            } else {
                // Wait for the client to read; new events only wake us
                // once they overflow the stream.
                stream.clearWakeup()
                client.events |= Int16(POLLOUT)
            }
            var ready = [client, pollfd(fd: stream.readEnd, events: Int16(POLLIN), revents: 0)]
            guard poll(&ready, 2, -1) >= 0 || Glibc.errno == EINTR else { return }
            // The client sends nothing during a trace: readable means gone.
            if ready[0].revents & ~Int16(POLLOUT) != 0 { return }
            if ready[0].revents & Int16(POLLOUT) != 0, !sender.flush() { return }
        }
    }

    /// Ends the trace of a client that let `EventStream.capacity` events
    /// pile up: it gets a last line saying so (there is room for it, see
    /// `TraceSender`), and the daemon logs it.
    private func dropped(_ sender: inout TraceSender, peer: PeerCredentials) {
        let reason = "the client read too slowly: \(EventStream.capacity) events were waiting"
        _ = sender.send([ControlReply.failure(ControlFailure(.noBufferSpace, "trace dropped: " + reason))])
        logger.warning("dropped the trace of pid \(peer.pid): \(reason)")
    }
}

/// `struct ucred` (Glibc's module leaves it out: it needs _GNU_SOURCE).
private struct PeerCredentials {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
}
