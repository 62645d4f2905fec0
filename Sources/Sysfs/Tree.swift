import Synchronization
import SystemPackage

/// A kernfs-like tree: the root directory plus O(1) inode lookup.
///
/// Nodes are created through this type so that each gets an inode number and
/// is published in the inode table before its parent lists it.
public final class SysfsTree: Sendable {
    private let inodes = InodeTable()
    public let root: Node
    private let invalidator = Mutex<(any CacheInvalidator)?>(nil)

    /// Tells `invalidator` about every later change (a server registers
    /// itself once, before serving).
    public func setCacheInvalidator(_ invalidator: any CacheInvalidator) {
        self.invalidator.withLock { $0 = invalidator }
    }

    public init() {
        let ino = inodes.reserve()
        precondition(ino == 1, "the root must be FUSE_ROOT_ID")
        root = Node(ino: ino, name: "", kind: .directory(Directory()), permissions: 0o755, parent: nil)
        inodes.install(root)
    }

    /// The node with inode number `ino`, if it exists.
    public func node(_ ino: UInt64) -> Node? { inodes.node(ino) }

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
        add(name, .directory(Directory()), permissions: permissions, in: parent)
    }

    @discardableResult
    public func makeAttribute(_ name: String, in parent: Node, permissions: UInt32,
                              show: Attribute.Show? = nil, store: Attribute.Store? = nil) -> Node {
        add(name, .attribute(Attribute(show: show, store: store)), permissions: permissions, in: parent)
    }

    /// A symlink in `parent` to the node at `targetPath` (from the root),
    /// with the relative target kernfs computes (`kernfs_get_target_path`).
    @discardableResult
    public func makeSymlink(_ name: String, in parent: Node, to targetPath: String) -> Node {
        let target = Self.relativeTarget(from: parent.path, to: targetPath)
        return add(name, .symlink(Symlink(target: target)), permissions: 0o777, in: parent)
    }

    /// Takes `node` and everything below it out of the tree. Open files on
    /// them get ENODEV from now on.
    public func remove(_ node: Node) {
        guard let parent = node.parent, let dir = parent.directory,
              dir.remove(named: node.name) === node else { return }
        markRemoved(node)
        invalidator.withLock { $0 }?.entryRemoved(parent: parent.ino, child: node.ino, name: node.name)
    }

    private func markRemoved(_ node: Node) {
        node.markRemoved()
        if let dir = node.directory {
            for child in dir.materialized() { markRemoved(child) }
        }
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
    /// common ancestor with `target`, then the rest of `target`.
    static func relativeTarget(from linkDirectory: String, to target: String) -> String {
        let from = linkDirectory.split(separator: "/")
        let to = target.split(separator: "/")
        var common = 0
        while common < from.count, common < to.count, from[common] == to[common] { common += 1 }
        let ups = Array(repeating: "..", count: from.count - common)
        return (ups + to[common...].map(String.init)).joined(separator: "/")
    }
}
