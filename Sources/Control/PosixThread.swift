import Glibc

/// Plain POSIX threads for the control server: the FUSE side of the daemon
/// runs on libfuse's threads and keeps Swift concurrency out, and so does
/// this. Every thread starts with all signals blocked, so that SIGINT and
/// SIGTERM keep reaching the FUSE loop, which unmounts on them.
enum PosixThread {
    /// Starts `body` on a new thread; nil if none could be created.
    /// A joinable thread must be joined; a detached one cleans up itself.
    static func start(detached: Bool, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
        var all = sigset_t()
        var previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let argument = Unmanaged.passRetained(Body(body)).toOpaque()
        var id = pthread_t()
        guard pthread_create(&id, nil, threadMain, argument) == 0 else {
            Unmanaged<Body>.fromOpaque(argument).release()
            return nil
        }
        if detached { pthread_detach(id) }
        return id
    }

    /// The closure, boxed to cross pthread_create's `void *`.
    private final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// The entry point pthread_create calls (a C function pointer).
    private static let threadMain: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { argument in
        Unmanaged<Body>.fromOpaque(argument!).takeRetainedValue().run()
        return nil
    }
}
