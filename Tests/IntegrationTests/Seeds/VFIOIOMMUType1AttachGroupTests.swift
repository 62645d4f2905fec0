import Foundation
import Glibc
import Testing

/// Seed 5, `vfio_iommu_type1_attach_group`: a group joining a container
/// first tries the container's existing domains and reuses one only if its
/// IOMMU driver made it (the domains' ops match); otherwise the container
/// gets a new domain. On the built-in `mixed-iommu` machine, groups 0 and 1
/// sit behind two VT-d units (one driver: they share a domain), groups 2
/// and 3 behind an AMD-Vi unit. Every profile the project has behaves so.
@Suite("Seed: vfio_iommu_type1_attach_group reuses a domain only within one IOMMU driver")
struct VFIOIOMMUType1AttachGroupTests {
    @Test("one domain per driver: VT-d groups share one across units, AMD-Vi groups another; visible in ctl dump",
          arguments: ["linux-7.1", "linux-6.1"])
    func domainPerDriver(profile: String) throws {
        try MountedMachine.with(arguments: ["--machine", "mixed-iommu", "--profile", profile]) { m in
            for group in ["0", "2", "1"] { try m.ctlOK("vfio", "attach", "--container", "c1", group) }
            try m.ctlOK("vfio", "attach", "--container", "c2", "3")
            #expect(try m.containerDomains() == #"[{"name":"c1","domains":[[0,1],[2]]},{"name":"c2","domains":[[3]]}]"#)
            // The VT-d domain outlives one of its groups; the last one frees it.
            try m.ctlOK("vfio", "detach", "0")
            #expect(try m.containerDomains() == #"[{"name":"c1","domains":[[1],[2]]},{"name":"c2","domains":[[3]]}]"#)
            try m.ctlOK("vfio", "detach", "1")
            try m.ctlOK("vfio", "attach", "--container", "c1", "0")
            #expect(try m.containerDomains() == #"[{"name":"c1","domains":[[0],[2]]},{"name":"c2","domains":[[3]]}]"#)
            try expectDumpRoundTrip(m)
        }
    }

    @Test("a stalled attach of a second VT-d group still joins the first one's domain; a concurrent AMD-Vi attach gets its own")
    func stalledAttachReuses() throws {
        try MountedMachine.with(arguments: ["--machine", "mixed-iommu"]) { m in
            try m.ctlOK("vfio", "attach", "--container", "c1", "0")
            // VFIO's container lock serialises the two attaches.
            let (second, third) = try m.expectWaiting(at: "attach", while: m.ctlRun("vfio", "attach", "--container", "c1", "1"),
                                                      m.ctlRun("vfio", "attach", "--container", "c1", "2"))
            #expect(second.wait()?.status == 0)
            #expect(third.wait()?.status == 0)
            #expect(try m.containerDomains() == #"[{"name":"c1","domains":[[0,1],[2]]}]"#)
        }
    }
}
