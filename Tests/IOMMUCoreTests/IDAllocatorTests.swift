@testable import IOMMUCore
import Testing

@Suite("Group id allocator") struct IDAllocatorTests {
    @Test("ids are handed out lowest free first, like ida_alloc")
    func lowestFreeFirst() {
        var ids = IDAllocator()
        #expect((0..<5).map { _ in ids.allocate() } == [0, 1, 2, 3, 4])
        ids.free(3)
        ids.free(1)
        #expect(ids.allocate() == 1)
        #expect(ids.allocate() == 3)
        #expect(ids.allocate() == 5)
    }
}
