import IOMMUCore
import Synchronization

/// Inode number → node, in O(1) and without a lock on lookups.
///
/// Slots live in fixed-size chunks that are never moved or freed while the
/// table exists. A slot and a chunk pointer are atomics: a node is
/// published with a release store once it is fully built, and a lookup
/// reads with acquire loads (plain loads on x86-64), so a request that
/// names a number sees the whole node, whichever thread made it. The
/// kernel only sends a request for an inode number after a LOOKUP or
/// READDIR reply published it, and that reply is written after the slot
/// was filled. Allocation (tree changes) takes `allocation`, never the
/// read path.
final class InodeTable: @unchecked Sendable {
    private typealias Slot = Atomic<Unmanaged<Node>?>
    private typealias Chunk = UnsafeMutablePointer<Slot>

    private static let chunkShift = 12
    private static let chunkSize = 1 << chunkShift
    private static let maxChunks = 1 << 14          // 67M inodes

    private let chunks: UnsafeMutablePointer<Atomic<Chunk?>>
    private let allocation = RankedMutex(.inodeAllocation, Allocation())

    /// Numbers are never reused: a request or notification about a
    /// released node finds nothing rather than a newer node.
    private struct Allocation {
        var next: UInt64 = 1                         // FUSE_ROOT_ID is 1
    }

    init() {
        chunks = .allocate(capacity: Self.maxChunks)
        for c in 0..<Self.maxChunks { (chunks + c).initialize(to: Atomic(nil)) }
    }

    deinit {
        for c in 0..<Self.maxChunks {
            guard let chunk = chunks[c].load(ordering: .acquiring) else { continue }
            for i in 0..<Self.chunkSize { chunk[i].load(ordering: .acquiring)?.release() }
            chunk.deinitialize(count: Self.chunkSize)
            chunk.deallocate()
        }
        chunks.deinitialize(count: Self.maxChunks)
        chunks.deallocate()
    }

    /// The slot of `ino`, if its chunk exists.
    private func slot(_ ino: UInt64) -> Chunk? {
        let c = Int(ino >> UInt64(Self.chunkShift))
        guard c < Self.maxChunks, let chunk = chunks[c].load(ordering: .acquiring) else { return nil }
        return chunk + Int(ino & UInt64(Self.chunkSize - 1))
    }

    /// The node with inode number `ino`, or nil for a number never handed out
    /// or already released.
    func node(_ ino: UInt64) -> Node? {
        slot(ino)?.pointee.load(ordering: .acquiring)?.takeUnretainedValue()
    }

    /// `node(_:)` for a caller that may race with `release` (the cache
    /// notifier looks up removed nodes the kernel may be forgetting): the
    /// node is retained under the allocation lock.
    func retainedNode(_ ino: UInt64) -> Node? {
        allocation.withLock { _ in node(ino) }
    }

    /// Reserves an inode number for a node about to be created.
    func reserve() -> UInt64 {
        allocation.withLock { a in
            let ino = a.next
            a.next += 1
            let c = Int(ino >> UInt64(Self.chunkShift))
            precondition(c < Self.maxChunks, "inode table full")
            if chunks[c].load(ordering: .relaxed) == nil {
                let chunk = Chunk.allocate(capacity: Self.chunkSize)
                for i in 0..<Self.chunkSize { (chunk + i).initialize(to: Atomic(nil)) }
                chunks[c].store(chunk, ordering: .releasing)
            }
            return ino
        }
    }

    /// Publishes `node` under its inode number (retains it).
    func install(_ node: Node) {
        slot(node.ino)!.pointee.store(Unmanaged.passRetained(node), ordering: .releasing)
    }

    /// Drops the table's reference. Only for nodes no request can name any
    /// more (never published, or removed and forgotten by the kernel); a
    /// late request for the number finds nothing.
    func release(_ ino: UInt64) {
        let old = allocation.withLock { _ in slot(ino)!.pointee.exchange(nil, ordering: .acquiringAndReleasing) }
        old?.release()
    }
}
