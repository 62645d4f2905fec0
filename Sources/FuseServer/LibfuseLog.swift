import CFuse
import Glibc
import IOMMUCore
import Logging

/// libfuse's own messages (`fuse: reading device: ...`, a reply the kernel
/// refused, an option it rejects) through the server's logger, instead of
/// straight to stderr, which is /dev/null once the server detached.
/// libfuse has one log function per process (`fuse_set_log_func`), so the
/// logger it forwards to is kept here.
enum LibfuseLog {
    private static let logger = RankedMutex<Logger?>(.libfuseLogger, nil)

    /// From now on libfuse's messages go to `logger`.
    static func route(to logger: Logger) {
        self.logger.withLock { $0 = logger }
        fuse_set_log_func(forward)
    }

    /// The `fuse_log_func_t`: formats the message and logs it without its
    /// trailing newline.
    private static let forward: fuse_log_func_t = { level, format, arguments in
        guard let format, let arguments else { return }
        var buffer = [CChar](repeating: 0, count: 1024)
        guard vsnprintf(&buffer, buffer.count, format, arguments) >= 0 else { return }
        var text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        while text.last == "\n" { text.removeLast() }
        logger.withLock { $0 }?.log(level: LibfuseLog.level(level), "\(text)")
    }

    private static func level(_ level: fuse_log_level) -> Logger.Level {
        switch level {
        case FUSE_LOG_EMERG, FUSE_LOG_ALERT, FUSE_LOG_CRIT: .critical
        case FUSE_LOG_ERR: .error
        case FUSE_LOG_WARNING: .warning
        case FUSE_LOG_NOTICE: .notice
        case FUSE_LOG_INFO: .info
        default: .debug
        }
    }
}
