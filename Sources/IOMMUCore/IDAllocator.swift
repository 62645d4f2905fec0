/// The kernel's IDA as iommu groups use it: `ida_alloc()` hands out the
/// lowest free id, `ida_free()` makes an id reusable.
struct IDAllocator {
    /// Every id below `next` is in use except those in `released`.
    private var next = 0
    private var released: Set<Int> = []

    mutating func allocate() -> Int {
        if let lowest = released.min() {
            released.remove(lowest)
            return lowest
        }
        defer { next += 1 }
        return next
    }

    /// Takes `id` out of circulation before anything is allocated by
    /// lowest-free (a group id restored from a dump).
    mutating func claim(_ id: Int) {
        if id >= next {
            released.formUnion(next..<id)
            next = id + 1
        } else {
            precondition(released.remove(id) != nil, "claiming an id that is in use")
        }
    }

    mutating func free(_ id: Int) {
        precondition(id < next && !released.contains(id), "freeing an id that is not allocated")
        released.insert(id)
    }
}
