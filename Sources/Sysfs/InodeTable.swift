import Synchronization

/// Inode number → node, in O(1) and without a lock on lookups.
///
/// Slots live in fixed-size chunks that are never moved or freed while the
/// table exists, so a reader can index them without synchronisation: the
/// kernel only sends a request for an inode number after a LOOKUP or READDIR
/// reply published it, and that reply is written after the slot was filled.
/// Allocation (tree changes) takes `allocation`, never the read path.
final class InodeTable: @unchecked Sendable {
    private static let chunkShift = 12
    private static let chunkSize = 1 << chunkShift
    private static let maxChunks = 1 << 14          // 67M inodes

    private let chunks: UnsafeMutablePointer<UnsafeMutablePointer<Unmanaged<Node>?>?>
    private let allocation = Mutex(Allocation())

    /// Numbers are never reused: a request or notification about a
    /// released node finds nothing rather than a newer node.
    private struct Allocation {
        var next: UInt64 = 1                         // FUSE_ROOT_ID is 1
    }

    init() {
        chunks = .allocate(capacity: Self.maxChunks)
        chunks.initialize(repeating: nil, count: Self.maxChunks)
    }

    deinit {
        for c in 0..<Self.maxChunks {
            guard let chunk = chunks[c] else { continue }
            for i in 0..<Self.chunkSize { chunk[i]?.release() }
            chunk.deallocate()
        }
        chunks.deallocate()
    }

    /// The node with inode number `ino`, or nil for a number never handed out
    /// or already released.
    func node(_ ino: UInt64) -> Node? {
        let c = Int(ino >> UInt64(Self.chunkShift))
        guard c < Self.maxChunks, let chunk = chunks[c] else { return nil }
        return chunk[Int(ino & UInt64(Self.chunkSize - 1))]?.takeUnretainedValue()
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
            if chunks[c] == nil {
                let chunk = UnsafeMutablePointer<Unmanaged<Node>?>.allocate(capacity: Self.chunkSize)
                chunk.initialize(repeating: nil, count: Self.chunkSize)
                chunks[c] = chunk
            }
            return ino
        }
    }

    /// Publishes `node` under its inode number (retains it).
    func install(_ node: Node) {
        let ino = node.ino
        chunks[Int(ino >> UInt64(Self.chunkShift))]![Int(ino & UInt64(Self.chunkSize - 1))] =
            Unmanaged.passRetained(node)
    }

    /// Drops the table's reference. Only for nodes no request can name any
    /// more (never published, or removed and forgotten by the kernel); a
    /// late request for the number finds nothing.
    func release(_ ino: UInt64) {
        let old = allocation.withLock { _ -> Unmanaged<Node>? in
            let chunk = chunks[Int(ino >> UInt64(Self.chunkShift))]!
            let slot = Int(ino & UInt64(Self.chunkSize - 1))
            defer { chunk[slot] = nil }
            return chunk[slot]
        }
        old?.release()
    }
}
