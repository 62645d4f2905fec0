import CFuse
import Glibc
import Logging
import Sysfs
import SystemPackage

/// Serves a `SysfsTree` through libfuse's low-level API, so that the mount
/// behaves like /sys: same modes, sizes, link counts and errnos, and every
/// write runs the attribute's store with the writer's credentials.
///
/// Use from one thread, in this order:
/// ```
/// let server = try FuseServer(tree: tree, options: options, logger: logger)
/// try server.mount()
/// try FuseServer.daemonize(foreground: true)   // optional
/// exit(server.serve())
/// ```
///
/// Permissions are enforced by the kernel (`default_permissions`): it
/// checks each node's mode and owner against the caller's fsuid, fsgid and
/// CAP_DAC_OVERRIDE exactly as for a real inode, before a request reaches
/// the server. The server adds what sysfs adds on top: kernfs' open checks
/// and the writer's capabilities for stores.
///
/// The tree may change while mounted (devices removed and rescanned,
/// drivers bound, groups created and released): the server registers a
/// `CacheNotifier` on it, whose thread tells the kernel to forget what it
/// cached about each change at once, and a write whose store changed the
/// tree is answered after that, so the writer's next syscall sees the new
/// tree, as on sysfs.
public final class FuseServer {
    private let session: OpaquePointer
    private let context: Unmanaged<ServerContext>
    private let options: MountOptions
    /// Tells the kernel about tree changes while `serve()` runs.
    private let notifier: CacheNotifier
    /// Set when the notifier thread could not be stopped: the session must
    /// then outlive this object (the thread may still use it).
    private var notifierAbandoned = false
    /// The canonical mount point while mounted.
    public private(set) var mountpoint: String?
    /// Where the server reports what its user should know: a stale mount
    /// cleaned up, failed cache notifications, why it stopped.
    private let logger: Logger

    /// Creates the FUSE session for `tree`; nothing is mounted yet.
    public init(tree: SysfsTree, options: MountOptions, logger: Logger) throws(FuseServerError) {
        // libfuse's -d trace stays libfuse's own, on stderr.
        if !options.debug { LibfuseLog.route(to: logger) }
        let context = Unmanaged.passRetained(ServerContext(tree: tree, singleThreaded: options.singleThreaded, logger: logger))
        guard let session = Self.makeSession(options, userdata: context.toOpaque()) else {
            context.release()
            throw .sessionCreationFailed
        }
        self.session = session
        self.context = context
        self.options = options
        self.logger = logger
        self.notifier = CacheNotifier(session: session, tree: tree, progress: context.takeUnretainedValue().notifications, logger: logger)
        // Before mounting: every change from now on is reported (and ignored
        // until `serve()` starts the notifier: nothing is cached before).
        tree.setCacheInvalidator(notifier)
    }

    deinit {
        // The tree keeps the notifier; from here on it ignores reports.
        notifier.requestStop()
        if notifierAbandoned { return }   // its thread may still use the session
        if mountpoint != nil { fuse_session_unmount(session) }
        fuse_session_destroy(session)
        context.release()
    }

    /// Mounts on `options.mountpoint` after the checks of `MountPoint`: a
    /// stale mount left by a killed server is detached (and logged), a live
    /// iommufs mount there is an error, and so is a directory with entries
    /// unless `options.allowNonEmpty`; any other mount is mounted over. The
    /// checks and the mount are one step for iommufs servers, so that of two
    /// started together on one directory exactly one mounts.
    public func mount() throws(FuseServerError) {
        precondition(mountpoint == nil, "already mounted")
        mountpoint = try MountPoint.whileClaimed(options.mountpoint, allowNonEmpty: options.allowNonEmpty,
                                                 logger: logger) { path throws(FuseServerError) in
            Glibc.errno = 0
            guard fuse_session_mount(session, path) == 0 else {
                let errno = Errno.last
                throw .mountFailed(path, errno.rawValue == 0 ? nil : errno)
            }
            return path
        }
    }

    /// Serves requests until the file system is unmounted (`fusermount3 -u`,
    /// `umount`) or the process gets SIGINT, SIGTERM or SIGHUP; then makes
    /// sure the mount is gone. Returns an exit status: 0 after a regular stop,
    /// 1 if the session failed. Either way the reason is logged.
    ///
    /// Tree changes made meanwhile (from request handlers or any other
    /// thread) reach the kernel's caches through the notifier thread, which
    /// runs from here until just before the unmount.
    public func serve() -> Int32 {
        precondition(mountpoint != nil, "serve() before mount()")
        Self.unblockStopSignals()
        guard fuse_set_signal_handlers(session) == 0 else {
            logger.error("could not install the signal handlers; unmounting")
            unmount()
            return 1
        }
        notifier.start()
        // Positive: the signal that stopped the loop; 0: unmounted.
        let result = options.singleThreaded ? fuse_session_loop(session) : runWorkerPool()
        let path = mountpoint ?? options.mountpoint
        stopNotifier()
        if !notifierAbandoned { unmount() }
        fuse_remove_signal_handlers(session)
        switch result {
        case 0:
            logger.info("\(path) was unmounted; stopping")
        case 1...:
            logger.info("stopping on \(Self.signalName(result)): unmounted \(path)")
        default:
            logger.error("the FUSE session failed: \(Errno(rawValue: -result)); unmounted \(path)")
            return 1
        }
        return 0
    }

    /// `SIGTERM` for 15 (the signals that stop the loop), else `signal N`.
    private static func signalName(_ signal: Int32) -> String {
        [SIGINT: "SIGINT", SIGTERM: "SIGTERM", SIGHUP: "SIGHUP"][signal] ?? "signal \(signal)"
    }

    /// Detaches from the terminal unless `foreground` (fuse_daemonize: fork,
    /// setsid, stdio to /dev/null, working directory `/`). Call it after
    /// `mount()`, so that mount errors still reach the terminal, and before
    /// `serve()`, which starts threads.
    public static func daemonize(foreground: Bool) throws(FuseServerError) {
        guard fuse_daemonize(foreground ? 1 : 0) == 0 else { throw .daemonizeFailed }
    }

    /// Makes SIGINT and SIGTERM reach libfuse's handlers. A parent may hand
    /// us a mask that blocks them (threads of test runners and some
    /// supervisors do; the worker threads would inherit it), and a
    /// non-interactive shell starts `cmd &` with SIGINT ignored, in which
    /// case libfuse installs no handler at all. A server that promises
    /// "Ctrl-C unmounts" takes both back. SIGHUP is only unblocked: an
    /// inherited ignore there is `nohup`'s deliberate choice.
    private static func unblockStopSignals() {
        for signal in [SIGINT, SIGTERM] { Glibc.signal(signal, SIG_DFL) }
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
    }

    /// libfuse's worker pool with its default limits, as the C floor runs it.
    private func runWorkerPool() -> Int32 {
        guard let config = fuse_loop_cfg_create() else { return -ENOMEM }
        defer { fuse_loop_cfg_destroy(config) }
        return fuse_session_loop_mt(session, config)
    }

    /// Stops the notifier thread before the session's channel closes (the
    /// thread writes notifications to it). Pending notifications are dropped:
    /// the unmount drops the kernel's caches anyway.
    ///
    /// A notification in flight can be stuck in the kernel: it waits for a
    /// directory's inode lock, which a process holds while its request (a
    /// LOOKUP, say) waits for an answer that the stopped loop will not give.
    /// Either the request is still queued (the loop stopped on a signal
    /// before reading it): it is answered here, on this thread; or libfuse
    /// had read it and dropped it when the loop stopped (its workers do, on
    /// exit): then only aborting the connection frees the lock, which is done
    /// after half a second (the mount is going away; pending requests fail
    /// with ENOTCONN instead of hanging), and the mount is detached with it.
    private func stopNotifier() {
        notifier.requestStop()
        if notifier.awaitStop(milliseconds: 20) { return }
        answerPendingRequests(untilNotifierStopsOrMilliseconds: 500)
        if notifier.awaitStop(milliseconds: 0) { return }
        guard let mountpoint else { return }
        let aborted = MountPoint.abortConnection(at: mountpoint)
        let outcome = aborted ? "aborted the connection" : "could not abort the connection (umount -f -l \(mountpoint) will)"
        logger.warning("a cache notification was stuck behind a request the stopped loop left unanswered; \(outcome)")
        if notifier.awaitStop(milliseconds: 5000) { return }
        logger.error("the cache notifier is still stuck in the kernel; leaving the mount at \(mountpoint) as it is")
        notifierAbandoned = true
    }

    /// Answers the requests queued in the kernel, on this thread, until the
    /// notifier has stopped or `milliseconds` have passed.
    private func answerPendingRequests(untilNotifierStopsOrMilliseconds milliseconds: Int) {
        // The loop may have left the session marked as exited, in which case
        // fuse_session_receive_buf would consume a request and drop it.
        fuse_session_reset(session)
        var buffer = fuse_buf()
        defer { free(buffer.mem) }
        let deadline = Self.monotonicMilliseconds() + milliseconds
        while Self.monotonicMilliseconds() < deadline, !notifier.awaitStop(milliseconds: 0) {
            var ready = pollfd(fd: fuse_session_fd(session), events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 10) == 1, ready.revents & Int16(POLLIN) != 0 else {
                // Nothing to read (10 ms passed), or the connection is gone
                // (then the notification returns by itself).
                if ready.revents != 0 { _ = notifier.awaitStop(milliseconds: 10) }
                continue
            }
            let size = fuse_session_receive_buf(session, &buffer)
            if size > 0 {
                fuse_session_process_buf(session, &buffer)
            } else if fuse_session_exited(session) != 0 {
                fuse_session_reset(session)   // a second Ctrl-C; keep answering
            }
        }
    }

    private static func monotonicMilliseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1000 + now.tv_nsec / 1_000_000
    }

    /// Unmounts if the kernel has not already done so (a signal stopped the
    /// loop); after an external unmount this only closes the channel.
    private func unmount() {
        fuse_session_unmount(session)
        mountpoint = nil
    }

    private static func makeSession(_ options: MountOptions, userdata: UnsafeMutableRawPointer) -> OpaquePointer? {
        var args = fuse_args(argc: 0, argv: nil, allocated: 0)
        defer { fuse_opt_free_args(&args) }
        for argument in sessionArguments(options) where fuse_opt_add_arg(&args, argument) != 0 {
            return nil
        }
        var operations = Operations.table()
        return cfuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
    }

    /// `default_permissions` lets the kernel do the mode and owner checks;
    /// fsname "sysfs" is what /proc/mounts shows as the source, like /sys.
    private static func sessionArguments(_ options: MountOptions) -> [String] {
        var mountOptions = "default_permissions,fsname=sysfs,subtype=iommufs"
        if options.allowOther { mountOptions += ",allow_other" }
        return ["iommufs", "-o", mountOptions] + (options.debug ? ["-d"] : [])
    }
}
