import Glibc
import IOMMUCore
import Synchronization
import SystemPackage

/// One kernfs node: a directory, an attribute file or a symlink.
///
/// Identity (inode number, name, kind, parent) is fixed at creation. What can
/// change later lives in atomics: the mode and the owner (chmod/chown, as
/// kernfs allows), and `state`, which holds the removal flag that open files
/// check (kernfs' active-reference break on removal) together with the
/// number of entry replies the kernel holds for the node (FUSE's lookup
/// count). A removed node whose count is zero is released from the inode
/// table at once; one the kernel still knows goes when the kernel forgets it.
///
/// Kept small on purpose: a 50,000-group machine has hundreds of thousands of
/// nodes once walked.
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
    /// nil for the root. Strong: a removed node the kernel still holds keeps
    /// its (removed) parent; the cycle with the parent's entries is broken
    /// when a removed directory is released (`SysfsTree.release`).
    public let parent: Node?
    /// The permission bits, and `ownedFlag` once chown gave the node an
    /// owner other than root (kept in `Node.owners`: almost no node has one,
    /// and a node one word smaller is a malloc size class smaller).
    private let permissionBits: Atomic<UInt32>
    /// Tells apart entries of one directory whose names hash alike: given
    /// at insertion under the parent's lock, never reused in that parent.
    /// (Declared here, beside the other 32-bit field, to fill its padding.)
    public internal(set) var sequence: UInt32 = 0
    private static let ownedFlag: UInt32 = 1 << 31
    /// uid << 32 | gid of the nodes that were chowned.
    private static let owners = RankedMutex<[ObjectIdentifier: UInt64]>(.nodeOwners, [:])
    /// `removedFlag` | the kernel's lookup count.
    private let state = Atomic<UInt64>(0)
    private static let removedFlag: UInt64 = 1 << 63
    /// `kernfs_name_hash(name, NULL)`: the entry's place in its parent's
    /// listing (kernfs orders siblings by hash, then name).
    public let hash: UInt32

    init(ino: UInt64, name: String, kind: Kind, permissions: UInt32, parent: Node?) {
        self.ino = ino
        self.name = name
        self.hash = KernfsHash.of(name)
        self.kind = kind
        self.parent = parent
        self.permissionBits = Atomic(permissions)
    }

    public var metadataSnapshot: Metadata {
        let bits = permissionBits.load(ordering: .acquiring)
        guard bits & Self.ownedFlag != 0 else { return Metadata(permissions: bits) }
        let o = Self.owners.withLock { $0[ObjectIdentifier(self)] } ?? 0
        return Metadata(permissions: bits & ~Self.ownedFlag,
                        uid: UInt32(truncatingIfNeeded: o >> 32), gid: UInt32(truncatingIfNeeded: o))
    }

    /// chmod: kernfs keeps the file-type bits and takes the permission bits.
    public func setPermissions(_ permissions: UInt32) {
        var current = permissionBits.load(ordering: .relaxed)
        while true {
            let next = (current & Self.ownedFlag) | (permissions & 0o7777)
            let (exchanged, original) = permissionBits.compareExchange(expected: current, desired: next,
                                                                       ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    /// chown; nil leaves that id as it is.
    public func setOwner(uid: UInt32?, gid: UInt32?) {
        Self.owners.withLock { owners in
            let current = owners[ObjectIdentifier(self)] ?? 0
            let newUID = uid.map(UInt64.init) ?? current >> 32
            let newGID = gid.map(UInt64.init) ?? current & 0xffff_ffff
            owners[ObjectIdentifier(self)] = newUID << 32 | newGID
            permissionBits.bitwiseOr(Self.ownedFlag, ordering: .acquiringAndReleasing)
        }
    }

    deinit {
        if permissionBits.load(ordering: .relaxed) & Self.ownedFlag != 0 {
            _ = Self.owners.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) }
        }
    }

    /// True once the node was taken out of the tree; open files then see ENODEV.
    public var isRemoved: Bool { state.load(ordering: .acquiring) & Self.removedFlag != 0 }

    /// Marks the node removed; true if the kernel holds no reference to it
    /// (then nothing can name its inode number any more).
    func markRemoved() -> Bool {
        let before = state.bitwiseOr(Self.removedFlag, ordering: .acquiringAndReleasing).oldValue
        return before == 0
    }

    /// Counts an entry reply about to be sent for the node; false (and
    /// nothing counted) if it was removed meanwhile: answer ENOENT then.
    public func acquireLookup() -> Bool {
        var current = state.load(ordering: .relaxed)
        while current & Self.removedFlag == 0 {
            let (exchanged, original) = state.compareExchange(expected: current, desired: current + 1,
                                                              ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// The kernel dropped `count` references (FORGET, or an entry reply that
    /// did not reach it); true if the node is removed and now unreferenced.
    func forget(_ count: UInt64) -> Bool {
        var current = state.load(ordering: .relaxed)
        while true {
            let references = current & ~Self.removedFlag
            let next = (current & Self.removedFlag) | (references >= count ? references - count : 0)
            let (exchanged, original) = state.compareExchange(expected: current, desired: next,
                                                              ordering: .acquiringAndReleasing)
            if exchanged { return next == Self.removedFlag && current != next }
            current = original
        }
    }

    /// The readdir offset after this entry: the hash above the sequence,
    /// so that offsets follow the listing order (but for names that hash
    /// alike) and stay valid while the directory changes, as kernfs' hash
    /// positions do. Never below 2 << 32: offsets 1 and 2 are "." and "..".
    public var position: UInt64 { UInt64(hash) << 32 | UInt64(sequence) }

    /// kernfs' sibling order (`kernfs_name_compare` without namespaces):
    /// hash, then the names' bytes as strcmp compares them.
    func precedes(_ other: Node) -> Bool {
        if hash != other.hash { return hash < other.hash }
        return name.utf8.lexicographicallyPrecedes(other.name.utf8)
    }

    /// Regular sysfs attributes report PAGE_SIZE whatever their content, a
    /// binary one its own size; kernfs directories and symlinks report 0.
    public var size: Int {
        guard case .attribute(let attribute) = kind else { return 0 }
        if case .binary(let file) = attribute.behaviour { return file.size }
        return 4096
    }

    /// kernfs convention: 2 + subdirectories for a directory, 1 otherwise.
    public var linkCount: Int {
        if case .directory(let d) = kind { return 2 + d.subdirectoryCount }
        return 1
    }

    /// The number of ancestors: 0 for the root.
    var depth: Int { parent.map { $0.depth + 1 } ?? 0 }

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

    /// The relative target kernfs shows for a symlink node
    /// (`kernfs_get_target_path`), computed when asked: the kernel caches it.
    public var linkTarget: String? {
        guard let symlink, let parent else { return nil }
        return SysfsTree.relativeTarget(from: parent.path, to: symlink.targetPath)
    }
}

/// A directory's entries, in kernfs order, behind the directory's own lock.
///
/// A directory may be populated lazily: its contents are created from the
/// model by a closure on first access (lookup, listing, change), so a big
/// machine mounts without building every file of every device. The closure
/// must only read the model's group, registry and leaf state (never a
/// device lock): it can run while a caller holds one.
///
/// Entries are an array in kernfs' rbtree order, (hash, name)
/// (`kernfs_link_sibling`), which is the getdents order: kept sorted by
/// each insertion and removal, and sorted once when a lazy population
/// ends (it appends), so that no listing sorts. A name index is added once
/// a directory grows past a few entries, so that small directories (most
/// of them) cost one array.
public final class Directory: @unchecked Sendable {
    public typealias Populate = @Sendable () -> Void
    /// Creates the entry `name` alone if the model has it (a lookup before
    /// the directory was listed).
    public typealias Resolve = @Sendable (_ name: String) -> Void
    /// The number of subdirectories the population would create.
    public typealias CountSubdirectories = @Sendable () -> Int

    /// What a lazily populated directory still has to do.
    private final class Lazy: Sendable {
        let populate: Populate
        let resolve: Resolve?
        let subdirectories: CountSubdirectories?

        init(_ populate: @escaping Populate, resolve: Resolve?, subdirectories: CountSubdirectories?) {
            self.populate = populate
            self.resolve = resolve
            self.subdirectories = subdirectories
        }
    }

    private struct Entries {
        /// In kernfs order, except while a population appends to it.
        var ordered: [Node] = []
        /// Name → node, for directories with more than `indexThreshold` entries.
        var byName: [String: Node]?
        var subdirectories: Int32 = 0
        var nextSequence: UInt32 = 0
        /// Entries were appended out of order (during a population).
        var unsorted = false

        func find(_ name: String) -> Node? {
            if let byName { return byName[name] }
            for node in ordered where node.name == name { return node }
            return nil
        }

        /// The index of the first entry that does not precede `node`.
        func insertionIndex(of node: Node) -> Int {
            var low = 0, high = ordered.count
            while low < high {
                let mid = (low + high) / 2
                if ordered[mid].precedes(node) { low = mid + 1 } else { high = mid }
            }
            return low
        }

        /// The index of the first entry whose hash is at least `hash`.
        func firstIndex(hashAtLeast hash: UInt32) -> Int {
            var low = 0, high = ordered.count
            while low < high {
                let mid = (low + high) / 2
                if ordered[mid].hash < hash { low = mid + 1 } else { high = mid }
            }
            return low
        }

        /// Restores kernfs order after a population appended.
        mutating func sortIfNeeded() {
            guard unsorted else { return }
            ordered.sort { $0.precedes($1) }
            unsorted = false
        }
    }

    private static let indexThreshold = 12

    private let entries = RankedMutex(.directoryEntries, Entries())
    /// The pending population; its lock is held while it runs, so other
    /// threads wait for complete contents.
    private let pending: RankedMutex<Lazy?>
    private let isPopulated = Atomic<Bool>(true)
    /// The thread running the population (it adds entries re-entrantly).
    private let populatingThread = Atomic<UInt>(0)
    /// Nanoseconds since the epoch of the last change after creation (0:
    /// none): kernfs updates a directory's mtime and ctime when an entry is
    /// added or removed, and the kernel compares the mtime with the one its
    /// cached listing was made at.
    private let changed = Atomic<Int64>(0)

    /// `depth`, the directory's distance from the root, orders nested
    /// populations (a directory's before its descendants'); it is
    /// evaluated in debug builds only.
    init(depth: @autoclosure () -> Int) {
        pending = RankedMutex(.population, key: UInt64(depth()), nil)
    }

    /// Defers the directory's contents to `populate`, run once on first use.
    ///
    /// With `resolve`, a lookup before the first listing creates only the
    /// entry it asks for; with `subdirectories`, the link count is answered
    /// without populating. A big directory (50,000 groups) then costs nothing
    /// until it is listed.
    public func populateLazily(resolve: Resolve? = nil, subdirectories: CountSubdirectories? = nil,
                               _ populate: @escaping Populate) {
        let lazy = Lazy(populate, resolve: resolve, subdirectories: subdirectories)
        pending.withLock { $0 = lazy }
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
            guard let lazy = work else { return }
            populatingThread.store(me, ordering: .relaxed)
            lazy.populate()
            entries.withLock { $0.sortIfNeeded() }
            work = nil
            populatingThread.store(0, ordering: .relaxed)
            isPopulated.store(true, ordering: .releasing)
        }
    }

    /// Runs `body` with the pending work, on this thread as the populating
    /// one; false if there is none (populated meanwhile) or `body` declined.
    private func withPending(_ body: (Lazy) -> Bool) -> Bool {
        if isPopulated.load(ordering: .acquiring) { return false }
        let me = Self.currentThread
        if populatingThread.load(ordering: .relaxed) == me { return false }
        return pending.withLock { work in
            guard let lazy = work else { return false }
            populatingThread.store(me, ordering: .relaxed)
            defer { populatingThread.store(0, ordering: .relaxed) }
            return body(lazy)
        }
    }

    public func child(named name: String) -> Node? {
        let resolved = withPending { lazy in
            guard let resolve = lazy.resolve else { return false }
            resolve(name)
            return true
        }
        if !resolved { ensurePopulated() }
        return entries.withLock { $0.find(name) }
    }

    /// The entries now, for one readdir stream.
    public func snapshot() -> [Node] {
        ensurePopulated()
        return entries.withLock { $0.ordered }
    }

    /// Calls `body` with the entries after the one at readdir offset
    /// `position` (`Node.position`; from the first entry for an offset
    /// below any entry's), in order, under the directory's lock, until it
    /// returns false. `body` must not block or touch the tree.
    ///
    /// Like `kernfs_dir_pos`, the listing resumes by hash: a binary search,
    /// then the entry with that exact position among the few with its
    /// hash. If that entry was removed meanwhile, it resumes at the next
    /// hash (kernfs, without its saved cursor, resumes at the same hash).
    public func forEachEntry(after position: UInt64, _ body: (Node) -> Bool) {
        ensurePopulated()
        entries.withLock { e in
            let hash = UInt32(truncatingIfNeeded: position >> 32)
            var start = e.firstIndex(hashAtLeast: hash)
            if hash >= 2 {
                var i = start
                while i < e.ordered.count, e.ordered[i].hash == hash, e.ordered[i].position != position { i += 1 }
                if i < e.ordered.count, e.ordered[i].position == position {
                    start = i + 1
                } else {
                    start = hash == .max ? e.ordered.count : e.firstIndex(hashAtLeast: hash + 1)
                }
            }
            for i in start..<e.ordered.count where !body(e.ordered[i]) { return }
        }
    }

    /// The entries created so far, without populating (for removal).
    func materialized() -> [Node] { entries.withLock { $0.ordered } }

    /// Drops the entries of a released (removed, forgotten) directory.
    func clear() { entries.withLock { $0 = Entries() } }

    public var subdirectoryCount: Int {
        var hint = 0
        if withPending({ lazy in
            guard let count = lazy.subdirectories else { return false }
            hint = count()
            return true
        }) { return hint }
        ensurePopulated()
        return entries.withLock { Int($0.subdirectories) }
    }

    public var count: Int {
        ensurePopulated()
        return entries.withLock { $0.ordered.count }
    }

    /// Nanoseconds since the epoch of the last added or removed entry, 0 if none.
    public var lastChange: Int64 { changed.load(ordering: .relaxed) }

    private func touch() {
        if isPopulating { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let ns = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
        // Strictly increasing, so that two changes within a clock tick differ.
        var current = changed.load(ordering: .relaxed)
        while true {
            let next = max(ns, current + 1)
            let (exchanged, original) = changed.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// Adds `node`, or returns the entry that already has its name.
    func insert(_ node: Node) -> Node? {
        ensurePopulated()
        // Only the populating thread gets here before the population ended.
        let appending = !isPopulated.load(ordering: .acquiring)
        if appending { pending.assertHeld() }
        let existing = entries.withLock { e -> Node? in
            if let existing = e.find(node.name) { return existing }
            node.sequence = e.nextSequence
            e.nextSequence &+= 1
            if appending {
                e.ordered.append(node)
                e.unsorted = true
            } else {
                e.ordered.insert(node, at: e.insertionIndex(of: node))
            }
            if e.byName != nil {
                e.byName![node.name] = node
            } else if e.ordered.count > Self.indexThreshold {
                e.byName = Dictionary(uniqueKeysWithValues: e.ordered.map { ($0.name, $0) })
            }
            if case .directory = node.kind { e.subdirectories += 1 }
            return nil
        }
        if existing == nil { touch() }
        return existing
    }

    func remove(named name: String) -> Node? {
        ensurePopulated()
        let removed = entries.withLock { e -> Node? in
            guard let node = e.find(name) else { return nil }
            e.byName?.removeValue(forKey: name)
            // Sorted: binary search, then one shift.
            let low = e.unsorted ? e.ordered.count : e.insertionIndex(of: node)
            if low < e.ordered.count, e.ordered[low] === node {
                e.ordered.remove(at: low)
            } else {
                e.ordered.removeAll { $0 === node }
            }
            if case .directory = node.kind { e.subdirectories -= 1 }
            return node
        }
        if removed != nil { touch() }
        return removed
    }
}

/// A kernfs symlink (a value stored in its node). The relative target is
/// computed from the link's directory and `targetPath` when the kernel asks
/// (once: it caches it).
public struct Symlink: Sendable {
    /// The target node's path from the root, e.g.
    /// `devices/pci0000:00/0000:00:02.0` (often the model's own string).
    public let targetPath: String

    init(targetPath: String) {
        self.targetPath = targetPath
    }
}
