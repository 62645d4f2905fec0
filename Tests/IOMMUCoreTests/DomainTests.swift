@testable import IOMMUCore
import Testing

@Suite("domain attachments per unit (domain ids)")
struct DomainTests {
    @Test("the first group behind a unit takes its domain id, the last one out gives it back, per unit")
    func attachmentsPerUnit() {
        let domain = Domain(serial: 1, type: .dma)
        #expect(domain.attachGroup(on: "dmar0"))
        #expect(!domain.attachGroup(on: "dmar0"))
        // A VFIO container's domain also serving a second unit.
        #expect(domain.attachGroup(on: "dmar1"))
        #expect(!domain.detachGroup(on: "dmar0"))
        #expect(domain.detachGroup(on: "dmar0"))
        // dmar1 is still counted once; dmar0 starts again from zero.
        #expect(!domain.attachGroup(on: "dmar1"))
        #expect(domain.attachGroup(on: "dmar0"))
        #expect(!domain.detachGroup(on: "dmar1"))
        #expect(domain.detachGroup(on: "dmar1"))
        #expect(domain.detachGroup(on: "dmar0"))
    }
}
