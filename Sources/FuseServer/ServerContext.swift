import CFuse
import Glibc
import Logging
import Synchronization
import Sysfs

/// What every request handler needs. libfuse hands it back as the session's
/// userdata; it is immutable, so handlers share it across worker threads
/// without a lock.
final class ServerContext: Sendable {
    /// Entry and attribute validity handed to the kernel. One second keeps
    /// `stat` inside the kernel (no request) while mode and owner changes
    /// made through this mount show up at once (the kernel updates its copy
    /// from the SETATTR reply).
    static let cacheTimeout = 1.0

    let tree: SysfsTree
    /// One timestamp for every node, like sysfs nodes that never change.
    let startTime: timespec
    /// The user namespace this server runs in, which plays the part of the
    /// kernel's initial user namespace for `capable()`; nil if unreadable.
    let userNamespace: NamespaceIdentity?
    /// How far the cache notifier has got; a write waits for the changes
    /// its store made (see `opWrite`).
    let notifications = NotificationProgress()
    /// Milliseconds a write waits at most for those notifications. They take
    /// well under a millisecond; a notification takes longer only behind a
    /// directory lock held by a request still to be answered. With a worker
    /// pool another worker answers it soon; with a single thread it waits
    /// for the waiting writer, so waiting long would only stall everybody.
    let writeVisibilityTimeout: Int
    /// The server's logger, for what a handler must report.
    let logger: Logger

    /// Set at INIT when the kernel can list directories without OPENDIR
    /// (and then caches the listings); see `opInit`.
    private let noOpendir = Atomic<Bool>(false)

    var listingsCachedWithoutOpendir: Bool { noOpendir.load(ordering: .relaxed) }

    func kernelCachesListings() { noOpendir.store(true, ordering: .relaxed) }

    init(tree: SysfsTree, singleThreaded: Bool, logger: Logger) {
        self.tree = tree
        self.logger = logger
        self.writeVisibilityTimeout = singleThreaded ? 20 : 100
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.startTime = now
        self.userNamespace = NamespaceIdentity(ofTask: nil)
    }

    /// The context of the session that received `req`.
    static func of(_ req: fuse_req_t?) -> ServerContext {
        Unmanaged<ServerContext>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    /// The `stat` the kernel shows for `node`: sysfs' sizes and link counts,
    /// the node's current mode and owner.
    func attributes(of node: Node) -> stat {
        let metadata = node.metadataSnapshot
        var st = stat()
        st.st_ino = UInt(node.ino)
        st.st_mode = node.fileType | metadata.permissions
        st.st_nlink = UInt(node.linkCount)
        st.st_uid = metadata.uid
        st.st_gid = metadata.gid
        st.st_size = node.size
        st.st_blksize = 4096
        st.st_atim = startTime
        st.st_mtim = startTime
        st.st_ctim = startTime
        // kernfs moves a directory's mtime and ctime on every added or
        // removed entry; the kernel checks its cached listing against it.
        if let changed = node.directory?.lastChange, changed != 0 {
            st.st_mtim = timespec(tv_sec: Int(changed / 1_000_000_000), tv_nsec: Int(changed % 1_000_000_000))
            st.st_ctim = st.st_mtim
        }
        return st
    }

    /// The answer to a LOOKUP of `node`.
    func entry(for node: Node) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = node.ino
        entry.attr = attributes(of: node)
        entry.attr_timeout = Self.cacheTimeout
        entry.entry_timeout = Self.cacheTimeout
        return entry
    }
}

extension Node {
    /// The `S_IF*` bits of `st_mode` (also the type `readdir` reports).
    var fileType: mode_t {
        switch kind {
        case .directory: return S_IFDIR
        case .attribute: return S_IFREG
        case .symlink: return S_IFLNK
        }
    }
}
