import IOMMUCore
import SystemPackage

/// A kernfs-like tree: the root directory plus O(1) inode lookup.
///
/// Nodes are created through this type so that each gets an inode number and
/// is published in the inode table before its parent lists it.
public final class SysfsTree: Sendable {
    private let inodes = InodeTable()
    public let root: Node
    private let invalidator = RankedMutex<(any CacheInvalidator)?>(.invalidator, nil)

    /// Tells `invalidator` about every later change (a server registers
    /// itself once, before serving).
    public func setCacheInvalidator(_ invalidator: any CacheInvalidator) {
        self.invalidator.withLock { $0 = invalidator }
    }

    public init() {
        let ino = inodes.reserve()
        precondition(ino == 1, "the root must be FUSE_ROOT_ID")
        root = Node(ino: ino, name: "", kind: .directory(Directory(depth: 0)), permissions: 0o755, parent: nil)
        inodes.install(root)
    }

    /// The node with inode number `ino`, if it exists. Lock-free: for the
    /// numbers the kernel holds (request handlers).
    public func node(_ ino: UInt64) -> Node? { inodes.node(ino) }

    /// The same for a number the kernel may be forgetting meanwhile (a
    /// removed node): safe against its concurrent release.
    public func nodeIfPresent(_ ino: UInt64) -> Node? { inodes.retainedNode(ino) }

    /// The node at `path` (relative to the root, `/`-separated), if any.
    /// Symlinks are not followed.
    public func node(atPath path: String) -> Node? {
        var node = root
        for component in path.split(separator: "/") {
            guard let next = node.directory?.child(named: String(component)) else { return nil }
            node = next
        }
        return node
    }

    /// The directory at `path`, created with its missing ancestors (0755).
    @discardableResult
    public func makeDirectories(_ path: String) -> Node {
        var node = root
        for component in path.split(separator: "/") {
            let name = String(component)
            node = node.directory?.child(named: name) ?? makeDirectory(name, in: node)
        }
        return node
    }

    @discardableResult
    public func makeDirectory(_ name: String, in parent: Node, permissions: UInt32 = 0o755) -> Node {
        add(name, .directory(Directory(depth: parent.depth + 1)), permissions: permissions, in: parent)
    }

    @discardableResult
    public func makeAttribute(_ name: String, in parent: Node, permissions: UInt32,
                              show: Attribute.Show? = nil, store: Attribute.Store? = nil) -> Node {
        add(name, .attribute(Attribute(show: show, store: store)), permissions: permissions, in: parent)
    }

    @discardableResult
    func makeAttribute(_ name: String, in parent: Node, permissions: UInt32, _ behaviour: Attribute.Behaviour) -> Node {
        add(name, .attribute(Attribute(behaviour)), permissions: permissions, in: parent)
    }

    /// A symlink in `parent` to the node at `targetPath` (from the root);
    /// its relative target (`kernfs_get_target_path`) is `Node.linkTarget`.
    @discardableResult
    public func makeSymlink(_ name: String, in parent: Node, to targetPath: String) -> Node {
        add(name, .symlink(Symlink(targetPath: targetPath)), permissions: 0o777, in: parent)
    }

    /// Takes `node` and everything below it out of the tree. Open files on
    /// them get ENODEV from now on. Nodes the kernel does not know are
    /// released at once, the others when the kernel forgets them.
    public func remove(_ node: Node) {
        guard let parent = node.parent, let dir = parent.directory,
              dir.remove(named: node.name) === node else { return }
        // Reported before anything is released: the notifier looks the
        // removed subtree up by inode number.
        let children = markRemoved(node)
        invalidator.withLock { $0 }?.entryRemoved(parent: parent.ino, child: node.ino, name: node.name)
        for unreferenced in children { release(unreferenced) }
    }

    /// Marks `node` and its materialized subtree removed; returns the nodes
    /// the kernel holds no reference to.
    private func markRemoved(_ node: Node) -> [Node] {
        var unreferenced: [Node] = []
        func mark(_ node: Node) {
            if node.markRemoved() { unreferenced.append(node) }
            if let dir = node.directory {
                for child in dir.materialized() { mark(child) }
            }
        }
        mark(node)
        return unreferenced
    }

    /// Reports `name` in `parent` as added, for an entry a lookup may have
    /// made silently (`Directory.populateLazily(resolve:)`) just before the
    /// change that created it was reported.
    func reportAdded(_ name: String, in parent: Node) {
        invalidator.withLock { $0 }?.entryAdded(parent: parent.ino, name: name)
    }

    /// FORGET: the kernel dropped `count` references to inode `ino`; a
    /// removed node is released once it has none left.
    public func forget(_ ino: UInt64, count: UInt64) {
        guard let node = inodes.node(ino), node.forget(count) else { return }
        release(node)
    }

    /// Frees a removed node nobody can name any more: its inode slot, and the
    /// entries of a directory (which reference it back through `parent`).
    /// The number is not reused, so a late request or notification about it
    /// finds nothing instead of another node.
    private func release(_ node: Node) {
        inodes.release(node.ino)
        node.directory?.clear()
    }

    private func add(_ name: String, _ kind: Node.Kind, permissions: UInt32, in parent: Node) -> Node {
        guard let dir = parent.directory else {
            preconditionFailure("\(parent.path) is not a directory")
        }
        let ino = inodes.reserve()
        let node = Node(ino: ino, name: name, kind: kind, permissions: permissions, parent: parent)
        inodes.install(node)
        // Entries are idempotent: a lazily populated directory may already
        // hold what a change adds, having read the model after the change.
        if let existing = dir.insert(node) {
            inodes.release(ino)
            return existing
        }
        if !dir.isPopulating { invalidator.withLock { $0 }?.entryAdded(parent: parent.ino, name: name) }
        return node
    }

    /// One `../` per directory level from `linkDirectory` up to the deepest
    /// common ancestor with `target`'s parent, then the rest of `target`
    /// (`kernfs_get_target_path`: a link to an ancestor, like a bus's
    /// `device`, climbs above it and names it).
    static func relativeTarget(from linkDirectory: String, to target: String) -> String {
        let from = linkDirectory.split(separator: "/")
        let to = target.split(separator: "/")
        var common = 0
        while common < from.count, common < to.count - 1, from[common] == to[common] { common += 1 }
        let ups = Array(repeating: "..", count: from.count - common)
        return (ups + to[common...].map(String.init)).joined(separator: "/")
    }
}
