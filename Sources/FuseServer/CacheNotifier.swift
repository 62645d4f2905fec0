import CFuse
import Glibc
import IOMMUCore
import Logging
import Synchronization
import Sysfs

/// Makes the tree's structural changes visible to the kernel at once, the
/// way libfuse's notify_inval_entry / notify_inval_inode examples do:
/// - a removed entry: `fuse_lowlevel_notify_delete` (drops the dentry,
///   marks a directory dead, sends IN_DELETE_SELF to inotify watches on the
///   removed node), after deleting, deepest first, what the kernel cached
///   below a removed directory; `notify_inval_entry` when refused;
/// - an added entry: `fuse_lowlevel_notify_inval_entry` (drops a negative
///   dentry cached for the name);
/// - either way the parent's `notify_inval_inode`, so that its link count
///   and listing are asked again.
///
/// A notification must never be sent from a request handler or under a
/// tree or model lock: the kernel takes the parent directory's inode lock
/// to apply it, and that lock may be held by a request the handler's
/// thread has to answer first. So `entryAdded`/`entryRemoved` only record
/// the change (under a `Mutex`, never blocking beyond that lock) and ONE
/// dedicated thread sends the notifications.
///
/// Wake-up: a POSIX semaphore, posted when the queue goes from empty to
/// non-empty (and on stop). `Mutex` has no condition variable; a semaphore
/// needs no second lock, cannot lose a wake-up posted before the thread
/// waits, and `sem_post` never blocks.
///
/// Queue and order: a FIFO of (parent, name) keys, coalesced: a name
/// changed again before the thread got to it keeps its place and takes the
/// latest change, a removal winning over an addition (dropping the dentry
/// serves both). What the kernel must forget depends only on the last state
/// of each name, and names are independent, so this is the FIFO's outcome.
/// Nothing is ever dropped while running and a reporter never waits: a
/// burst (a bridge with hundreds of devices removed) is one record per
/// name, and a name removed and re-added a thousand times while the
/// thread is busy is still one record, so memory is bounded by the
/// distinct names changed since the last batch, not by the number of
/// changes.
///
/// Lifecycle: reports are dropped until `start()` (nothing can be cached:
/// the kernel has not been answered yet) and after `requestStop()` (the
/// mount is going away).
final class CacheNotifier: CacheInvalidator {
    private struct Key: Hashable {
        let parent: UInt64
        let name: String
    }

    private enum Change {
        case added
        /// `child`: the inode number of the latest node removed under the name.
        case removed(child: UInt64)

        /// `self` followed by `next`, for the same name.
        func merged(with next: Change) -> Change {
            switch (self, next) {
            case (_, .removed): return next
            case (.removed, .added): return self
            case (.added, .added): return next
            }
        }
    }

    private enum Phase { case idle, running, stopped }

    private struct Queue {
        var phase = Phase.idle
        /// Number of the latest change reported while running, merged or not
        /// (see `NotificationProgress`).
        var reported: UInt64 = 0
        /// Keys in the order of their first change since the last batch.
        var order: [Key] = []
        var changes: [Key: Change] = [:]

        mutating func take() -> [(Key, Change)] {
            defer { order = []; changes = [:] }
            return order.map { ($0, changes[$0]!) }
        }
    }

    private let session: SessionHandle
    /// How far the notifications have got, for writers that wait for the
    /// changes their store made (`NotificationProgress`).
    let progress: NotificationProgress
    /// For the subtree below a removed directory. Unowned: the tree keeps
    /// the notifier, and the server keeps the tree while the thread runs.
    private unowned let tree: SysfsTree
    private let queue = RankedMutex(.notifierQueue, Queue())
    /// Checked between two notifications, so that a stop is not delayed by a
    /// long batch.
    private let stopping = Atomic<Bool>(false)
    private let wakeup = Semaphore()
    private let exited = Semaphore()
    private let thread = RankedMutex<pthread_t?>(.notifierThread, nil)
    /// Where a failed notification is reported.
    private let logger: Logger

    init(session: OpaquePointer, tree: SysfsTree, progress: NotificationProgress, logger: Logger) {
        self.session = SessionHandle(pointer: session)
        self.tree = tree
        self.progress = progress
        self.logger = logger
    }

    // MARK: CacheInvalidator (any thread, never blocks)

    func entryAdded(parent: UInt64, name: String) {
        enqueue(Key(parent: parent, name: name), .added)
    }

    func entryRemoved(parent: UInt64, child: UInt64, name: String) {
        enqueue(Key(parent: parent, name: name), .removed(child: child))
    }

    private func enqueue(_ key: Key, _ change: Change) {
        let (number, wake) = queue.withLock { q -> (UInt64, Bool) in
            guard q.phase == .running else { return (0, false) }
            q.reported += 1
            if let earlier = q.changes[key] {
                q.changes[key] = earlier.merged(with: change)
                return (q.reported, false)
            }
            q.changes[key] = change
            q.order.append(key)
            return (q.reported, q.order.count == 1)
        }
        if number != 0 { progress.reportedByThisThread(number) }
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
            logger.error("could not start the cache notifier thread; tree changes will show after \(ServerContext.cacheTimeout) s")
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
            defer { q.phase = .stopped; _ = q.take() }
            return q.phase == .running
        }
        stopping.store(true, ordering: .relaxed)
        progress.stop()
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

    // MARK: The notifier thread

    fileprivate func run() {
        Self.nameThisThread("iommufs-notify")
        var reported = ReportedErrors(logger: logger)
        while true {
            wakeup.wait()
            let taken = queue.withLock { q -> (batch: [(Key, Change)], covers: UInt64)? in
                q.phase == .running ? (q.take(), q.reported) : nil
            }
            guard let taken else { break }
            send(taken.batch, &reported)
            progress.applied(through: taken.covers)
        }
        exited.post()
    }

    /// Applies one batch (every name changed since the previous one), in
    /// the order of the names' first changes.
    ///
    /// Each parent directory is first invalidated once per batch
    /// (`notify_inval_inode`: attributes, hence the link count, and any
    /// cached listing). Every change of the batch was made before that call,
    /// so the kernel's next look at the parent sees all of them. The call
    /// also answers whether the kernel holds the parent's inode at all: when
    /// it does not (ENOENT), it cannot have cached any entry below it either
    /// (a dentry pins its parent's), so the batch's entries of that parent
    /// need no notification. Most additions of a rescan are in directories
    /// the same rescan created, which the kernel has never seen.
    private func send(_ batch: [(Key, Change)], _ reported: inout ReportedErrors) {
        var cachedParents: [UInt64: Bool] = [:]
        func isCached(_ parent: UInt64) -> Bool {
            if let known = cachedParents[parent] { return known }
            let result = fuse_lowlevel_notify_inval_inode(session.pointer, parent, 0, 0)
            reported.check(result, "invalidate the attributes of directory inode \(parent)")
            let cached = result != -ENOENT
            cachedParents[parent] = cached
            return cached
        }
        for (key, change) in batch {
            if stopping.load(ordering: .relaxed) { return }
            guard isCached(key.parent) else { continue }
            switch change {
            case .removed(let child):
                if let node = tree.nodeIfPresent(child), node.isRemoved, node.directory != nil {
                    deleteCachedContents(of: node, &reported)
                }
                sendDelete(parent: key.parent, child: child, name: key.name, &reported)
            case .added:
                let result = key.name.withCString {
                    fuse_lowlevel_notify_inval_entry(session.pointer, key.parent, $0, strlen($0))
                }
                reported.check(result, "invalidate the new entry \"\(key.name)\" of directory inode \(key.parent)")
            }
        }
    }

    /// Drops, deepest first, the entries the kernel may have cached below
    /// the removed directory `directory`, so that the directory is empty in
    /// the dcache when its own notify_delete comes: the kernel refuses to
    /// delete a directory with a child dentry in use (ENOTEMPTY, which
    /// libfuse also prints), and a sysfs `remove` file open for the very
    /// write that removed its device directory is such a child.
    ///
    /// Subdirectories get notify_delete (marked dead, so that nothing can be
    /// looked up in them even from a working directory inside); files and
    /// links get notify_inval_entry, which takes no lock on the child: a
    /// file being written holds its inode lock until the write is answered,
    /// and that write may be waiting for this very batch (`opWrite`).
    ///
    /// A directory whose inode the kernel does not hold (inval_inode answers
    /// ENOENT) can have no cached entries, so its subtree is skipped: the
    /// cost follows what the kernel cached, not the size of the subtree.
    /// The nodes of a removed subtree keep their entries, frozen.
    private func deleteCachedContents(of directory: Node, _ reported: inout ReportedErrors) {
        guard let entries = directory.directory,
              fuse_lowlevel_notify_inval_inode(session.pointer, directory.ino, -1, 0) == 0 else { return }
        for child in entries.snapshot() {
            if stopping.load(ordering: .relaxed) { return }
            if child.directory != nil {
                deleteCachedContents(of: child, &reported)
                sendDelete(parent: directory.ino, child: child.ino, name: child.name, &reported)
            } else {
                let result = child.name.withCString {
                    fuse_lowlevel_notify_inval_entry(session.pointer, directory.ino, $0, strlen($0))
                }
                reported.check(result, "invalidate the removed entry \"\(child.name)\" of directory inode \(directory.ino)")
            }
        }
    }

    /// notify_delete. ENOENT: nothing cached. ENOTEMPTY: the kernel dropped
    /// the entry but something below it is still in use (a race with a
    /// lookup; the deepest-first walk avoids the usual cases); the entry is
    /// gone from path walks all the same. ENOSYS (or another refusal):
    /// plain invalidation drops the dentry without the delete semantics.
    private func sendDelete(parent: UInt64, child: UInt64, name: String, _ reported: inout ReportedErrors) {
        name.withCString { cName in
            let length = strlen(cName)
            let deleted = fuse_lowlevel_notify_delete(session.pointer, parent, child, cName, length)
            guard deleted != 0, deleted != -ENOENT, deleted != -ENOTEMPTY else { return }
            reported.check(deleted, "report the removal of \"\(name)\" from directory inode \(parent)")
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

/// The notifier's progress, for a request handler that wants the kernel to
/// have forgotten what its own store changed before it answers (so that
/// the writer's next syscall sees the new tree, as on sysfs).
///
/// Every change reported while the notifier runs gets the next number;
/// the reporting thread keeps the number of its latest change (thread-local,
/// so a writer waits for its own changes, not for another thread's burst).
/// `applied` is the number up to which every change has been sent to the
/// kernel. A waiter waits on a condition variable (the `Mutex` of
/// Synchronization has none), for a bounded time: the notifier may be
/// waiting for a directory lock that a process holds while its request
/// waits for a free worker, possibly the waiting one; after the bound the
/// write is answered anyway and the notification lands a moment later.
final class NotificationProgress: @unchecked Sendable {
    /// `applied` and `stopped` are guarded by `mutex`.
    private var applied: UInt64 = 0
    private var stopped = false
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The number of the calling thread's latest reported change (a `let`:
    /// read on every write, without an exclusivity check).
    private let latestOfThread: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_key_delete(latestOfThread)
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Change number `number` (never 0) was reported by the calling thread.
    func reportedByThisThread(_ number: UInt64) {
        pthread_setspecific(latestOfThread, UnsafeRawPointer(bitPattern: UInt(number)))
    }

    /// The number of the calling thread's latest reported change, 0 if none.
    var latestOfThisThread: UInt64 {
        UInt64(UInt(bitPattern: pthread_getspecific(latestOfThread)))
    }

    /// The notifier has sent every change up to number `count`.
    func applied(through count: UInt64) {
        pthread_mutex_lock(mutex)
        applied = max(applied, count)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// The notifier is gone: nobody waits any more.
    func stop() {
        pthread_mutex_lock(mutex)
        stopped = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until every change up to number `count` has been sent to the
    /// kernel, the notifier stopped, or `milliseconds` passed.
    func wait(through count: UInt64, milliseconds: Int) {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let nanoseconds = Int(deadline.tv_nsec) + milliseconds * 1_000_000
        deadline.tv_sec += nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        pthread_mutex_lock(mutex)
        while applied < count, !stopped {
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { break }
        }
        pthread_mutex_unlock(mutex)
    }
}

/// Errors of the notify calls, each errno logged once. ENOENT (nothing
/// cached) is the common answer and never logged; ENOSYS (a kernel older
/// than the call, or a connection not yet initialized) means there is
/// nothing the kernel could have cached that it can be told about.
private struct ReportedErrors {
    let logger: Logger
    private var logged = Set<Int32>()

    init(logger: Logger) { self.logger = logger }

    mutating func check(_ result: Int32, _ action: @autoclosure () -> String) {
        guard result < 0, result != -ENOENT, result != -ENOSYS else { return }
        guard logged.insert(-result).inserted else { return }
        logger.error("could not \(action()): \(String(cString: strerror(-result))) (further such errors are not reported)")
    }
}

/// The libfuse session, used only by the notifier thread between `start`
/// and the end of `awaitStop`, while the session exists.
private struct SessionHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// An unnamed POSIX semaphore (process-private), at a fixed address.
private final class Semaphore: @unchecked Sendable {
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
