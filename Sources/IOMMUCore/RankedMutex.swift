import Glibc
import Synchronization

/// A `Mutex` of a `LockClass`: in release builds exactly a `Mutex`; in
/// debug builds it also keeps, per thread, the locks held, the way the
/// kernel's lockdep does:
/// - taking a lock that is not below every held one in the order of
///   `LockClass` (or taking one twice) traps, naming both;
/// - `assertHeld()` (`lockdep_assert_held`) traps unless the calling thread
///   holds the lock.
///
/// Debug builds also tell ThreadSanitizer about each acquire and release:
/// a contended `Mutex` is handed over by the kernel (a PI futex), which
/// TSan cannot see.
public struct RankedMutex<Value: ~Copyable>: ~Copyable, Sendable {
    @usableFromInline let mutex: Mutex<Value>
    #if DEBUG
    @usableFromInline let ranked: HeldLocks.Lock
    #endif

    /// A lock of `lockClass` around `value`. `key` orders two locks of a
    /// class that nests (see `LockClass`); evaluated in debug builds only.
    @inlinable
    public init(_ lockClass: LockClass, key: @autoclosure () -> UInt64 = 0, _ value: consuming sending Value) {
        mutex = Mutex(value)
        #if DEBUG
        ranked = HeldLocks.Lock(lockClass, key: key())
        #endif
    }

    @inlinable
    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        #if DEBUG
        HeldLocks.ofThisThread.willAcquire(ranked)
        defer { HeldLocks.ofThisThread.released(ranked) }
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            ranked.acquired()
            defer { ranked.releasing() }
            return try body(&value)
        }
        #else
        return try mutex.withLock(body)
        #endif
    }

    /// `lockdep_assert_held`: traps in debug builds unless this thread
    /// holds the lock; nothing in release builds.
    @inlinable @inline(__always)
    public borrowing func assertHeld(file: StaticString = #fileID, line: UInt = #line) {
        #if DEBUG
        HeldLocks.ofThisThread.assertHeld(ranked, file: file, line: line)
        #endif
    }
}

#if DEBUG
/// The ranked locks one thread holds, in the order taken (debug builds).
@usableFromInline
final class HeldLocks {
    /// The identity and rank of one `RankedMutex`; its address is also
    /// what ThreadSanitizer is told about.
    @usableFromInline
    final class Lock: Sendable {
        let lockClass: LockClass
        let key: UInt64

        @usableFromInline
        init(_ lockClass: LockClass, key: UInt64) {
            self.lockClass = lockClass
            self.key = key
        }

        var name: String { lockClass.nestsByKey ? "\(lockClass) (key \(key))" : "\(lockClass)" }

        @usableFromInline
        func acquired() { ThreadSanitizer.acquire?(Unmanaged.passUnretained(self).toOpaque()) }

        @usableFromInline
        func releasing() { ThreadSanitizer.release?(Unmanaged.passUnretained(self).toOpaque()) }

        /// Whether `self` may be taken while `held` is held.
        func mayBeTaken(inside held: Lock) -> Bool {
            if held.lockClass.level != lockClass.level { return held.lockClass.level < lockClass.level }
            return held !== self && held.lockClass == lockClass && lockClass.nestsByKey && held.key < key
        }
    }

    private var held: [Lock] = []

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { Unmanaged<HeldLocks>.fromOpaque($0!).release() }
        return key
    }()

    @usableFromInline
    static var ofThisThread: HeldLocks {
        if let record = pthread_getspecific(key) { return Unmanaged<HeldLocks>.fromOpaque(record).takeUnretainedValue() }
        let record = HeldLocks()
        pthread_setspecific(key, Unmanaged.passRetained(record).toOpaque())
        return record
    }

    @usableFromInline
    func willAcquire(_ lock: Lock) {
        if let conflict = held.first(where: { !lock.mayBeTaken(inside: $0) }) {
            let what = conflict === lock ? "taken again" : "taken while holding \(conflict.name)"
            fatalError("lock order: \(lock.name) \(what); held: \(held.map(\.name).joined(separator: ", "))")
        }
        held.append(lock)
    }

    @usableFromInline
    func released(_ lock: Lock) {
        if let index = held.lastIndex(where: { $0 === lock }) { held.remove(at: index) }
    }

    @usableFromInline
    func assertHeld(_ lock: Lock, file: StaticString, line: UInt) {
        guard held.contains(where: { $0 === lock }) else {
            fatalError("\(lock.name) is not held; held: \(held.map(\.name).joined(separator: ", "))", file: file, line: line)
        }
    }
}

/// ThreadSanitizer's annotations, when the process runs under it.
enum ThreadSanitizer {
    typealias Annotation = @convention(c) (UnsafeMutableRawPointer?) -> Void

    static let acquire = annotation("__tsan_acquire")
    static let release = annotation("__tsan_release")

    private static func annotation(_ name: String) -> Annotation? {
        dlsym(nil, name).map { unsafeBitCast($0, to: Annotation.self) }
    }
}
#endif
