import IOMMUCore
@testable import Sysfs
import Testing

@Suite("node lifetime and listing positions") struct NodeLifetimeTests {
    @Test("a removed node the kernel never looked up is released at once")
    func unreferencedRemoval() {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("kernel/iommu_groups")
        let group = tree.makeDirectory("7", in: dir)
        let type = tree.makeAttribute("type", in: group, permissions: 0o644, show: { .success([]) })
        tree.remove(group)
        #expect(group.isRemoved && type.isRemoved)
        #expect(tree.node(group.ino) == nil)
        #expect(tree.node(type.ino) == nil)
    }

    @Test("a removed node the kernel holds lives until it is forgotten, and is not looked up again")
    func forgetAfterRemoval() {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("kernel/iommu_groups")
        let group = tree.makeDirectory("3", in: dir)
        #expect(group.acquireLookup())
        #expect(group.acquireLookup())
        tree.remove(group)
        #expect(!group.acquireLookup(), "a removed node answers ENOENT")
        #expect(tree.node(group.ino) === group)
        tree.forget(group.ino, count: 1)
        #expect(tree.node(group.ino) === group)
        tree.forget(group.ino, count: 1)
        #expect(tree.node(group.ino) == nil)
        // A number is never handed out again.
        let again = tree.makeDirectory("3", in: dir)
        #expect(again.ino > group.ino)
    }

    @Test("forgetting a node still in the tree keeps it")
    func forgetLiveNode() {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("bus/pci")
        #expect(dir.acquireLookup())
        tree.forget(dir.ino, count: 1)
        #expect(tree.node(dir.ino) === dir)
    }

    @Test("listing positions stay with their entries while the directory changes")
    func stablePositions() {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("kernel/iommu_groups")
        let nodes = (0..<20).map { tree.makeDirectory(String($0), in: dir) }
        func names(after position: UInt64) -> [String] {
            var seen: [String] = []
            dir.directory!.forEachEntry(after: position) { seen.append($0.name); return true }
            return seen
        }
        let all = names(after: 0)
        #expect(all.count == 20)
        // Resume after the tenth entry listed, then change the directory.
        let resumeAt = nodes[Int(all[9])!].position
        let removed = [all[4], all[12]]
        for name in removed { tree.remove(nodes[Int(name)!]) }
        tree.makeDirectory("20", in: dir)
        var expected = all.dropFirst(10).filter { !removed.contains($0) }
        if KernfsHash.of("20") > KernfsHash.of(all[9]) {
            expected.append("20")
            expected.sort { KernfsHash.of($0) < KernfsHash.of($1) }
        }
        #expect(names(after: resumeAt) == expected)
        #expect(dir.directory!.child(named: "15") === nodes[15], "the name index finds entries of a big directory")
        #expect(dir.linkCount == 2 + 19)
    }

    @Test("a lazily populated directory resolves single lookups and counts without populating")
    func resolveBeforeListing() {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("kernel/iommu_groups")
        let populated = Mutex(0)
        dir.directory!.populateLazily(
            resolve: { name in
                if let id = Int(name), id < 100 { tree.makeDirectory(name, in: dir) }
            },
            subdirectories: { 100 },
            { populated.withLock { $0 += 1 }; for id in 0..<100 { tree.makeDirectory(String(id), in: dir) } })
        #expect(dir.linkCount == 102)
        #expect(dir.directory!.child(named: "42") != nil)
        #expect(dir.directory!.child(named: "420") == nil)
        #expect(populated.withLock { $0 } == 0)
        #expect(dir.directory!.count == 100)
        #expect(populated.withLock { $0 } == 1)
        #expect(dir.linkCount == 102)
    }

    @Test("chmod and chown keep each other's bits")
    func metadata() {
        let tree = SysfsTree()
        let node = tree.makeAttribute("x", in: tree.makeDirectories("a"), permissions: 0o644, show: { .success([]) })
        node.setOwner(uid: 1000, gid: nil)
        node.setPermissions(0o600)
        node.setOwner(uid: nil, gid: 50)
        #expect(node.metadataSnapshot == Node.Metadata(permissions: 0o600, uid: 1000, gid: 50))
    }
}

import Synchronization
