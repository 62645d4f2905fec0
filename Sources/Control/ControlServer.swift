import Glibc
import IOMMUCore
import Synchronization
import SystemPackage
import Topology

/// The daemon's control socket: a listening Unix socket (mode 0600) and a
/// thread that accepts connections, each served by a `ControlSession` on a
/// thread of its own (a `trace` lasts as long as its client wants).
///
/// ```
/// let control = try ControlServer(path: path, machine: machine, document: document)
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

    /// Listens at `path` (absolute, as the daemon changes its working
    /// directory); nothing is accepted before `start`.
    public init(path: String, machine: Machine, document: DocumentText) throws(ControlSocketError) {
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
            let handler = handler
            let started = PosixThread.start(detached: true) {
                ControlSession(channel: LineChannel(fd: fd, maximumLength: ControlSession.maximumRequestLength),
                               handler: handler, serverUID: serverUID).run()
            }
            if started == nil { close(fd) }
        }
    }
}
