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

    mutating func free(_ id: Int) {
        precondition(id < next && !released.contains(id), "freeing an id that is not allocated")
        released.insert(id)
    }
}
