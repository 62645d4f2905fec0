import CFuse
import Glibc
import Synchronization
import Sysfs

/// Makes the tree's structural changes visible to the kernel at once, the
/// way libfuse's notify_inval_entry / notify_inval_inode examples do:
/// - a removed entry: `fuse_lowlevel_notify_delete` (drops the dentry and
///   everything cached below it, tells inotify watchers; falls back to
///   `notify_inval_entry` when refused), then the parent's attributes;
/// - an added entry: `fuse_lowlevel_notify_inval_entry` (drops a negative
///   dentry cached for the name), then the parent's attributes, so that
///   its link count and listing are asked again.
///
/// A notification must never be sent from a request handler or under a
/// tree or model lock: the kernel takes the parent directory's inode lock
/// to apply it, and that lock may be held by a request the handler's
/// thread has to answer first. So `entryAdded`/`entryRemoved` only append
/// to a FIFO (a `Mutex`-guarded array, never blocking beyond that lock) and
/// ONE dedicated thread sends the notifications, in order.
///
/// Wake-up: a POSIX semaphore, posted when the FIFO goes from empty to
/// non-empty (and on stop). `Mutex` has no condition variable; a semaphore
/// needs no second lock, cannot lose a wake-up posted before the thread
/// waits, and `sem_post` never blocks.
///
/// Memory: the FIFO is unbounded, so a burst (a bridge with hundreds of
/// devices removed) is never dropped and never makes a reporter wait; it
/// holds one small record per tree change, and the thread empties it at
/// hundreds of thousands of records per second.
///
/// Lifecycle: reports are dropped until `start()` (nothing can be cached:
/// the kernel has not been answered yet) and after `requestStop()` (the
/// mount is going away). Ordering: records are applied in report order;
/// the parents' attribute invalidations of one batch are coalesced and
/// sent after the batch's entries.
final class CacheNotifier: CacheInvalidator {
    private enum Change {
        case added(parent: UInt64, name: String)
        case removed(parent: UInt64, child: UInt64, name: String)
    }

    private enum Phase { case idle, running, stopped }

    private struct Queue {
        var phase = Phase.idle
        var pending: [Change] = []
    }

    private let session: SessionHandle
    private let queue = Mutex(Queue())
    /// Checked between two notifications, so that a stop is not delayed by a
    /// long batch.
    private let stopping = Atomic<Bool>(false)
    private let wakeup = Semaphore()
    private let exited = Semaphore()
    private let thread = Mutex<pthread_t?>(nil)

    init(session: OpaquePointer) {
        self.session = SessionHandle(pointer: session)
    }

    // MARK: CacheInvalidator (any thread, never blocks)

    func entryAdded(parent: UInt64, name: String) {
        enqueue(.added(parent: parent, name: name))
    }

    func entryRemoved(parent: UInt64, child: UInt64, name: String) {
        enqueue(.removed(parent: parent, child: child, name: name))
    }

    private func enqueue(_ change: Change) {
        let wake = queue.withLock { q -> Bool in
            guard q.phase == .running else { return false }
            q.pending.append(change)
            return q.pending.count == 1
        }
        if wake { wakeup.post() }
    }

    // MARK: Lifecycle (the serving thread)

    /// Starts the notifier thread; false if it could not be created (the
    /// mount then works as before, with changes seen after the cache
    /// timeout). Call after mounting and after any fork (daemonize).
    @discardableResult
    func start() -> Bool {
        let starting = queue.withLock { q -> Bool in
            guard q.phase == .idle else { return false }
            q.phase = .running
            return true
        }
        guard starting else { return false }
        // The thread blocks every signal, like libfuse's workers, so that
        // SIGINT/SIGTERM reach the thread whose loop must notice them.
        var all = sigset_t()
        var previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let argument = Unmanaged.passRetained(self).toOpaque()
        var id = pthread_t()
        guard pthread_create(&id, nil, cacheNotifierMain, argument) == 0 else {
            Unmanaged<CacheNotifier>.fromOpaque(argument).release()
            queue.withLock { $0.phase = .stopped }
            Diagnostics.log("could not start the cache notifier thread; tree changes will show after \(ServerContext.cacheTimeout) s")
            return false
        }
        thread.withLock { $0 = id }
        return true
    }

    /// From now on reports are ignored and pending ones dropped (the mount
    /// is going away: the kernel drops its cache with it). The thread exits
    /// after the notification it may be sending; see `awaitStop`.
    func requestStop() {
        let wasRunning = queue.withLock { q -> Bool in
            defer { q.phase = .stopped; q.pending = [] }
            return q.phase == .running
        }
        stopping.store(true, ordering: .relaxed)
        if wasRunning { wakeup.post() }
    }

    /// After `requestStop`: true once the thread has exited and been joined
    /// (or never ran), false if it is still inside a notification after
    /// `milliseconds`.
    func awaitStop(milliseconds: Int) -> Bool {
        guard let id = thread.withLock({ $0 }) else { return true }
        guard exited.wait(milliseconds: milliseconds) else { return false }
        pthread_join(id, nil)
        thread.withLock { $0 = nil }
        return true
    }

    /// True while the thread exists (started, not yet joined).
    var isThreadAlive: Bool { thread.withLock { $0 != nil } }

    // MARK: The notifier thread

    fileprivate func run() {
        Self.nameThisThread("iommufs-notify")
        var reported = ReportedErrors()
        while true {
            wakeup.wait()
            let batch = queue.withLock { q -> [Change]? in
                guard q.phase == .running else { return nil }
                defer { q.pending = [] }
                return q.pending
            }
            guard let batch else { break }
            send(batch, &reported)
        }
        exited.post()
    }

    private func send(_ batch: [Change], _ reported: inout ReportedErrors) {
        var parents: [UInt64] = []
        var seen = Set<UInt64>()
        for change in batch {
            if stopping.load(ordering: .relaxed) { return }
            switch change {
            case .removed(let parent, let child, let name):
                sendDelete(parent: parent, child: child, name: name, &reported)
                if seen.insert(parent).inserted { parents.append(parent) }
            case .added(let parent, let name):
                let result = name.withCString { fuse_lowlevel_notify_inval_entry(session.pointer, parent, $0, strlen($0)) }
                reported.check(result, "invalidate the new entry \"\(name)\" of directory inode \(parent)")
                if seen.insert(parent).inserted { parents.append(parent) }
            }
        }
        for parent in parents {
            if stopping.load(ordering: .relaxed) { return }
            let result = fuse_lowlevel_notify_inval_inode(session.pointer, parent, 0, 0)
            reported.check(result, "invalidate the attributes of directory inode \(parent)")
        }
    }

    /// notify_delete; when the kernel refuses it for a cached entry (no
    /// support, a mount on it, a child inode that does not match), plain
    /// invalidation still drops the dentry.
    private func sendDelete(parent: UInt64, child: UInt64, name: String, _ reported: inout ReportedErrors) {
        name.withCString { cName in
            let length = strlen(cName)
            let deleted = fuse_lowlevel_notify_delete(session.pointer, parent, child, cName, length)
            guard deleted != 0, deleted != -ENOENT else { return }
            if deleted != -ENOSYS {
                reported.check(deleted, "report the removal of \"\(name)\" from directory inode \(parent)")
            }
            let invalidated = fuse_lowlevel_notify_inval_entry(session.pointer, parent, cName, length)
            reported.check(invalidated, "invalidate the removed entry \"\(name)\" of directory inode \(parent)")
        }
    }
}

extension CacheNotifier {
    /// Shows in `ps -L`, `top -H` and /proc (pthread_setname_np is a GNU
    /// extension Swift does not import; this is what it does for the
    /// calling thread).
    fileprivate static func nameThisThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY)
        guard fd >= 0 else { return }
        _ = name.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
}

/// The thread's entry point (a C function pointer for pthread_create).
private func cacheNotifierMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged<CacheNotifier>.fromOpaque(argument!).takeRetainedValue().run()
    return nil
}

/// Errors of the notify calls, each errno logged once. ENOENT (nothing
/// cached) is the common answer and never logged; ENOSYS (a kernel older
/// than the call, or a connection not yet initialized) means there is
/// nothing the kernel could have cached that it can be told about.
private struct ReportedErrors {
    private var logged = Set<Int32>()

    mutating func check(_ result: Int32, _ action: @autoclosure () -> String) {
        guard result < 0, result != -ENOENT, result != -ENOSYS else { return }
        guard logged.insert(-result).inserted else { return }
        Diagnostics.log("could not \(action()): \(String(cString: strerror(-result))) (further such errors are not reported)")
    }
}

/// The libfuse session, used only by the notifier thread between `start`
/// and the end of `awaitStop`, while the session exists.
private struct SessionHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// An unnamed POSIX semaphore (process-private), at a fixed address.
final class Semaphore: @unchecked Sendable {
    private let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)

    init(value: UInt32 = 0) {
        sem_init(semaphore, 0, value)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// Never blocks; async-signal-safe.
    func post() { sem_post(semaphore) }

    func wait() {
        while sem_wait(semaphore) != 0 && errno == EINTR {}
    }

    /// False if not posted within `milliseconds` (0: only tries).
    func wait(milliseconds: Int) -> Bool {
        // sem_clockwait (monotonic) is a GNU extension Swift does not import;
        // a clock step during these short waits only shortens or lengthens one.
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let nanoseconds = Int(deadline.tv_nsec) + (milliseconds % 1000) * 1_000_000
        deadline.tv_sec += milliseconds / 1000 + nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        while sem_timedwait(semaphore, &deadline) != 0 {
            if errno != EINTR { return false }
        }
        return true
    }
}
