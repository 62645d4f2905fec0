import IOMMUCore
@testable import Sysfs
import SystemPackage
import Testing

@Suite("kernfs semantics") struct KernfsTests {
    @Test("symlink targets climb to the common ancestor", arguments: [
        ("kernel/iommu_groups/5/devices", "devices/pci0000:00/0000:00:1c.0/0000:03:00.0",
         "../../../../devices/pci0000:00/0000:00:1c.0/0000:03:00.0"),
        ("devices/pci0000:00/0000:00:02.0", "kernel/iommu_groups/0", "../../../kernel/iommu_groups/0"),
        ("devices/pci0000:00/0000:00:02.0", "devices/virtual/iommu/dmar0", "../../virtual/iommu/dmar0"),
        ("class/iommu", "devices/virtual/iommu/dmar0", "../../devices/virtual/iommu/dmar0"),
        ("devices/virtual/iommu/dmar0/devices", "devices/pci0000:00/0000:00:02.0", "../../../../pci0000:00/0000:00:02.0"),
    ])
    func relativeTargets(from: String, to: String, expected: String) {
        #expect(SysfsTree.relativeTarget(from: from, to: to) == expected)
    }

    /// An attribute that records what its store saw.
    final class Recorder: Sendable {
        let seen = Mutex<[[UInt8]]>([])
    }

    func makeAttribute(permissions: UInt32 = 0o644) -> (SysfsTree, Node, Recorder) {
        let tree = SysfsTree()
        let recorder = Recorder()
        let node = tree.makeAttribute("type", in: tree.makeDirectories("kernel"), permissions: permissions,
                                      show: { .success(Array("DMA-FQ\n".utf8)) },
                                      store: { buffer, _ in
                                          recorder.seen.withLock { $0.append(Array(buffer)) }
                                          return .success(buffer.count)
                                      })
        return (tree, node, recorder)
    }

    @Test("writes are clamped to a page; empty writes never reach the store")
    func writeClamp() throws {
        let (_, node, recorder) = makeAttribute()
        let file = try OpenAttribute.open(node, forReading: false, forWriting: true).get()
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 5000)
        #expect(big.withUnsafeBytes { file.write($0, caller: FullyPrivileged()) } == .success(4096))
        #expect([UInt8]().withUnsafeBytes { file.write($0, caller: FullyPrivileged()) } == .success(0))
        #expect(recorder.seen.withLock { $0.map(\.count) } == [4096])
    }

    @Test("reads slice the text generated at offset 0")
    func readSlices() throws {
        let (_, node, _) = makeAttribute()
        let file = try OpenAttribute.open(node, forReading: true, forWriting: false).get()
        #expect(file.read(offset: 0, size: 3) { Array($0) } == .success(Array("DMA".utf8)))
        #expect(file.read(offset: 4, size: 100) { Array($0) } == .success(Array("FQ\n".utf8)))
        #expect(file.read(offset: 100, size: 100) { Array($0) } == .success([]))
    }

    @Test("open checks the mode bits and the show/store ops, even for root")
    func openChecks() throws {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("kernel")
        let readOnly = tree.makeAttribute("reserved_regions", in: dir, permissions: 0o444, show: { .success([]) })
        let writeOnly = tree.makeAttribute("remove", in: dir, permissions: 0o200, store: { b, _ in .success(b.count) })
        #expect(throws: Errno.permissionDenied) { try OpenAttribute.open(readOnly, forReading: false, forWriting: true).get() }
        #expect(throws: Errno.permissionDenied) { try OpenAttribute.open(writeOnly, forReading: true, forWriting: false).get() }
        // chmod adds a write bit, but there is still no store.
        readOnly.setPermissions(0o666)
        #expect(throws: Errno.permissionDenied) { try OpenAttribute.open(readOnly, forReading: false, forWriting: true).get() }
        #expect(throws: Errno.isDirectory) { try OpenAttribute.open(dir, forReading: true, forWriting: false).get() }
    }

    @Test("files opened before a removal get ENODEV")
    func removal() throws {
        let (tree, node, _) = makeAttribute()
        let file = try OpenAttribute.open(node, forReading: true, forWriting: true).get()
        tree.remove(node.parent!)
        #expect(node.isRemoved)
        #expect(tree.node(atPath: "kernel/type") == nil)
        #expect(file.read(offset: 0, size: 10) { $0.count } == .failure(.noDevice))
        #expect(Array("DMA".utf8).withUnsafeBytes { file.write($0, caller: FullyPrivileged()) } == .failure(.noDevice))
    }

    @Test("directories count their subdirectories; inode numbers find nodes")
    func linkCounts() {
        let tree = SysfsTree()
        let groups = tree.makeDirectories("kernel/iommu_groups")
        for id in 0..<3 { tree.makeDirectory(String(id), in: groups) }
        tree.makeAttribute("x", in: groups, permissions: 0o444, show: { .success([]) })
        #expect(groups.linkCount == 5)
        #expect(tree.node(groups.ino) === groups)
        #expect(tree.node(1) === tree.root)
        #expect(tree.node(999_999) == nil)
    }
}

import Synchronization
