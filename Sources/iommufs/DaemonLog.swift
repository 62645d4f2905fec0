import Glibc
import Logging
import Synchronization

/// The server's one logger, for what the person running it should know
/// (a stale mount cleaned up, a cache notification that failed, why the
/// server stopped, a trace client dropped, a control connection refused,
/// libfuse's own messages).
///
/// While the process has its terminal the lines go to stderr as
/// `iommufs: message`; once it detached (`detach()`, right after
/// `fuse_daemonize` pointed stderr at /dev/null) they go to the system log
/// through syslog(3), facility `daemon`, tagged `iommufs[PID]`, where
/// `journalctl -t iommufs` or /var/log/syslog shows them.
///
/// The logger is made here, once, and handed to the FUSE server and the
/// control socket; nothing else writes diagnostics.
enum DaemonLog {
    static let logger = Logger(label: "iommufs") { _ in DaemonLogHandler() }

    /// Set once the process has detached: from then on messages go to syslog.
    fileprivate static let detached = Atomic<Bool>(false)

    /// Sends every later message to the system log. Call it in the detached
    /// child, before it starts threads that log.
    static func detach() {
        // ident nil: syslog tags messages with the program's name.
        openlog(nil, LOG_PID | LOG_NDELAY, LOG_DAEMON)
        detached.store(true, ordering: .releasing)
    }
}

/// The `LogHandler` of `DaemonLog.logger`: one line per message, on stderr
/// or in the system log. Metadata, if any, follows the message as
/// `key=value` pairs.
struct DaemonLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }
        let text = ([event.message.description] + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
            .joined(separator: " ")
        if DaemonLog.detached.load(ordering: .acquiring) {
            Self.systemLog(text, priority: Self.priority(event.level))
        } else {
            printError("iommufs: " + text)
        }
    }

    /// syslog(3), which Swift cannot call directly (it is variadic).
    private static func systemLog(_ text: String, priority: Int32) {
        text.withCString { message in
            withVaList([message]) { vsyslog(priority, "%s", $0) }
        }
    }

    /// The syslog priority of a swift-log level.
    private static func priority(_ level: Logger.Level) -> Int32 {
        switch level {
        case .trace, .debug: LOG_DEBUG
        case .info: LOG_INFO
        case .notice: LOG_NOTICE
        case .warning: LOG_WARNING
        case .error: LOG_ERR
        case .critical: LOG_CRIT
        }
    }
}
