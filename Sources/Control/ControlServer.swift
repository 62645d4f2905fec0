import Glibc
import IOMMUCore
import Logging
import Synchronization
import SystemPackage
import Topology

/// The daemon's control socket: a listening Unix socket (mode 0600) and a
/// thread that accepts connections, each served by a `ControlSession` on a
/// thread of its own (a `trace` lasts as long as its client wants), up to
/// `maximumConnections` at once; a connection beyond that gets a refusal
/// (EAGAIN) as its only line and is closed at once, by the accepting thread.
///
/// ```
/// let control = try ControlServer(path: path, machine: machine, document: document, logger: logger)
/// // fork (daemonize) here if at all: threads do not survive it
/// try control.start()
/// ... serve the mount ...
/// control.stop()   // removes the socket file
/// ```
public final class ControlServer: Sendable {
    public let path: String
    private let listener: Int32
    /// The socket file's identity, so that `stop` removes only ours.
    private let file: (device: UInt, inode: UInt)
    private let handler: ControlHandler
    /// Written once by `stop` to wake the accept loop.
    private let stopPipe: (read: Int32, write: Int32)
    private let acceptor = RankedMutex<pthread_t?>(.controlAcceptor, nil)
    /// Sessions running; only the accepting thread adds to it.
    private let connections = Atomic<Int>(0)
    /// Where refused connections and dropped trace clients are reported.
    private let logger: Logger

    /// How many control connections are served at once. Each is a thread
    /// of its own (8 MiB of address space for its stack) and, for a trace,
    /// a queue of up to `EventStream.capacity` events; without a limit a
    /// client that opens connections in a loop grows the daemon by a thread
    /// each (500 connections made 506 threads). 64 is far more than a user
    /// runs side by side (a few traces beside the one-shot calls of a
    /// script or of a test suite running in parallel), and keeps the
    /// control side to 64 threads, each holding at most a few hundred KiB
    /// of trace events (`EventStream`).
    public static let maximumConnections = 64

    /// Listens at `path` (absolute, as the daemon changes its working
    /// directory); nothing is accepted before `start`.
    public init(path: String, machine: Machine, document: DocumentText, logger: Logger) throws(ControlSocketError) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw ControlSocketError(path: path, reason: "pipe: \(Errno(rawValue: Glibc.errno))") }
        ends.forEach { _ = fcntl($0, F_SETFD, FD_CLOEXEC) }
        let listener: Int32
        do {
            listener = try ControlSocket.listen(at: path)
        } catch {
            ends.forEach { close($0) }
            throw error
        }
        var fileStatus = stat()
        lstat(path, &fileStatus)
        self.path = path
        self.listener = listener
        self.file = (UInt(fileStatus.st_dev), UInt(fileStatus.st_ino))
        self.handler = ControlHandler(machine: machine, document: document)
        self.stopPipe = (ends[0], ends[1])
        self.logger = logger
    }

    /// Starts accepting; call after any fork.
    public func start() throws(ControlSocketError) {
        guard let thread = PosixThread.start(detached: false, { [self] in acceptLoop() }) else {
            throw ControlSocketError(path: path, reason: "could not start the control thread")
        }
        acceptor.withLock { $0 = thread }
    }

    /// Stops accepting and removes the socket file. Sessions in progress
    /// end with the process.
    public func stop() {
        var byte: UInt8 = 1
        _ = write(stopPipe.write, &byte, 1)
        if let thread = acceptor.withLock({ $0 }) { pthread_join(thread, nil) }
        close(listener)
        var status = stat()
        if lstat(path, &status) == 0, UInt(status.st_dev) == file.device, UInt(status.st_ino) == file.inode { unlink(path) }
        close(stopPipe.read)
        close(stopPipe.write)
    }

    private func acceptLoop() {
        let serverUID = geteuid()
        var refusals = RefusalReport()
        while true {
            var ready = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                         pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
            guard poll(&ready, 2, -1) >= 0 else {
                if Glibc.errno == EINTR { continue }
                return
            }
            if ready[1].revents != 0 { return }
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else {
                // The client left already, or no descriptor is free for now.
                if Glibc.errno == EMFILE || Glibc.errno == ENFILE { usleep(100_000) }
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            guard connections.load(ordering: .acquiring) < Self.maximumConnections else {
                refuse(fd)
                refusals.refused(logger)
                continue
            }
            connections.add(1, ordering: .acquiringAndReleasing)
            let started = PosixThread.start(detached: true) { [self] in
                ControlSession(channel: LineChannel(fd: fd, maximumLength: ControlSession.maximumRequestLength),
                               handler: handler, serverUID: serverUID, logger: logger).run()
                connections.subtract(1, ordering: .acquiringAndReleasing)
            }
            if started == nil {
                connections.subtract(1, ordering: .acquiringAndReleasing)
                close(fd)
            }
        }
    }

    /// Answers a connection over the limit with the refusal, without
    /// waiting for its request (this thread must not block on a client): a
    /// client reads the refusal as the reply to whatever it sent.
    private func refuse(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        let refusal = ControlFailure(.resourceTemporarilyUnavailable,
                                     "the server already serves \(Self.maximumConnections) control connections, its limit; "
                                     + "try again once one of them has closed")
        LineChannel(fd: fd).send(ControlReply.failure(refusal))
    }
}

/// Refused connections, logged at most once a second: a client that
/// retries in a loop must not flood the system log.
private struct RefusalReport {
    private var lastReport: Int?
    private var unreported = 0

    mutating func refused(_ logger: Logger) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        if let lastReport, now.tv_sec - lastReport < 1 {
            unreported += 1
            return
        }
        let more = unreported == 0 ? "" : " (and \(unreported) more since the last report)"
        logger.warning("refused a control connection: \(ControlServer.maximumConnections) are open, the limit\(more)")
        lastReport = now.tv_sec
        unreported = 0
    }
}
