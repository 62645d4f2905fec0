import Glibc
import IOMMUCore
import Synchronization
import SystemPackage

/// One kernfs node: a directory, an attribute file or a symlink.
///
/// Identity (inode number, name, kind, parent) is fixed at creation. What can
/// change later is guarded where it lives: the mode and owner (chmod/chown, as
/// kernfs allows) by `metadata`, a directory's entries by its own lock, and
/// `isRemoved` is an atomic flag that open files check, like kernfs'
/// active-reference break on removal.
public final class Node: @unchecked Sendable {
    public enum Kind: Sendable {
        case directory(Directory)
        case attribute(Attribute)
        case symlink(Symlink)
    }

    public struct Metadata: Sendable, Equatable {
        /// Permission bits only (no file-type bits).
        public var permissions: UInt32
        public var uid: UInt32 = 0
        public var gid: UInt32 = 0
    }

    public let ino: UInt64
    public let name: String
    public let kind: Kind
    /// nil for the root. Not weak: every node is kept by the inode table
    /// for the tree's lifetime, and a weak reference costs a side table.
    public unowned(unsafe) let parent: Node?
    private let metadata: Mutex<Metadata>
    private let removed = Atomic<Bool>(false)

    init(ino: UInt64, name: String, kind: Kind, permissions: UInt32, parent: Node?) {
        self.ino = ino
        self.name = name
        self.kind = kind
        self.parent = parent
        self.metadata = Mutex(Metadata(permissions: permissions))
    }

    public var metadataSnapshot: Metadata { metadata.withLock { $0 } }

    /// chmod: kernfs keeps the file-type bits and takes the permission bits.
    public func setPermissions(_ permissions: UInt32) {
        metadata.withLock { $0.permissions = permissions & 0o7777 }
    }

    /// chown; nil leaves that id as it is.
    public func setOwner(uid: UInt32?, gid: UInt32?) {
        metadata.withLock { m in
            if let uid { m.uid = uid }
            if let gid { m.gid = gid }
        }
    }

    /// True once the node was taken out of the tree; open files then see ENODEV.
    public var isRemoved: Bool { removed.load(ordering: .acquiring) }

    func markRemoved() { removed.store(true, ordering: .releasing) }

    /// Regular sysfs attributes report PAGE_SIZE whatever their content;
    /// kernfs directories and symlinks report 0.
    public var size: Int {
        if case .attribute = kind { return 4096 }
        return 0
    }

    /// kernfs convention: 2 + subdirectories for a directory, 1 otherwise.
    public var linkCount: Int {
        if case .directory(let d) = kind { return 2 + d.subdirectoryCount }
        return 1
    }

    /// Path from the tree root, without a leading slash ("" for the root).
    public var path: String {
        guard let parent else { return "" }
        let p = parent.path
        return p.isEmpty ? name : p + "/" + name
    }

    public var directory: Directory? {
        if case .directory(let d) = kind { return d }
        return nil
    }

    public var attribute: Attribute? {
        if case .attribute(let a) = kind { return a }
        return nil
    }

    public var symlink: Symlink? {
        if case .symlink(let s) = kind { return s }
        return nil
    }
}

/// A directory's entries, in creation order, behind the directory's own lock.
///
/// A directory may be populated lazily: its contents are created from the
/// model by a closure on first access (lookup, listing, change), so a big
/// machine mounts without building every file of every device. The closure
/// must only read the model's group, registry and leaf state (never a
/// device lock): it can run while a caller holds one.
public final class Directory: Sendable {
    public typealias Populate = @Sendable () -> Void

    private struct Entries {
        var byName: [String: Node] = [:]
        var ordered: [Node] = []
        var subdirectories = 0
    }

    private let entries = Mutex(Entries())
    /// The pending population; its lock is held while it runs, so other
    /// threads wait for complete contents.
    private let pending = Mutex<Populate?>(nil)
    private let isPopulated = Atomic<Bool>(true)
    /// The thread running the population (it adds entries re-entrantly).
    private let populatingThread = Atomic<UInt>(0)

    init() {}

    /// Defers the directory's contents to `populate`, run once on first use.
    public func populateLazily(_ populate: @escaping Populate) {
        pending.withLock { $0 = populate }
        isPopulated.store(false, ordering: .releasing)
    }

    /// True on the thread that is populating this directory: what it adds
    /// is not a change the kernel could have cached.
    var isPopulating: Bool { populatingThread.load(ordering: .relaxed) == Self.currentThread }

    private static var currentThread: UInt { UInt(bitPattern: Int(bitPattern: pthread_self())) }

    private func ensurePopulated() {
        if isPopulated.load(ordering: .acquiring) { return }
        let me = Self.currentThread
        if populatingThread.load(ordering: .relaxed) == me { return }
        pending.withLock { work in
            guard let populate = work else { return }
            populatingThread.store(me, ordering: .relaxed)
            populate()
            work = nil
            populatingThread.store(0, ordering: .relaxed)
            isPopulated.store(true, ordering: .releasing)
        }
    }

    public func child(named name: String) -> Node? {
        ensurePopulated()
        return entries.withLock { $0.byName[name] }
    }

    /// The entries now, for one readdir stream.
    public func snapshot() -> [Node] {
        ensurePopulated()
        return entries.withLock { $0.ordered }
    }

    /// The entries created so far, without populating (for removal).
    func materialized() -> [Node] { entries.withLock { $0.ordered } }

    public var subdirectoryCount: Int {
        ensurePopulated()
        return entries.withLock { $0.subdirectories }
    }

    public var count: Int {
        ensurePopulated()
        return entries.withLock { $0.ordered.count }
    }

    /// Adds `node`, or returns the entry that already has its name.
    func insert(_ node: Node) -> Node? {
        ensurePopulated()
        return entries.withLock { e in
            if let existing = e.byName[node.name] { return existing }
            e.byName[node.name] = node
            e.ordered.append(node)
            if node.directory != nil { e.subdirectories += 1 }
            return nil
        }
    }

    func remove(named name: String) -> Node? {
        ensurePopulated()
        return entries.withLock { e in
            guard let node = e.byName.removeValue(forKey: name) else { return nil }
            e.ordered.removeAll { $0 === node }
            if node.directory != nil { e.subdirectories -= 1 }
            return node
        }
    }
}

/// A kernfs symlink: its target is the relative path kernfs computes from the
/// link's directory to the target node, fixed at creation.
public final class Symlink: Sendable {
    /// The relative target, e.g. `../../../../devices/pci0000:00/0000:00:02.0`.
    public let target: String
    /// The same, NUL-terminated, for `fuse_reply_readlink`.
    public let cTarget: [CChar]

    init(target: String) {
        self.target = target
        self.cTarget = Array(target.utf8CString)
    }
}
