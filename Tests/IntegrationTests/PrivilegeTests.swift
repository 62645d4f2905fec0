import Foundation
import Glibc
import Testing

/// Who may write `type`: the mode decides who may open it, the writer's
/// CAP_SYS_ADMIN and CAP_SYS_RAWIO decide whether the store runs.
@Suite("Privileges") struct PrivilegeTests {
    @Test("a non-root writer is refused at open; reads are fine")
    func nobody() throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/4/type")
            let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
            let write = sh("\(nobody) sh -c 'echo identity > \(type)'")
            #expect(write.status != 0 && write.stderr.contains("Permission denied"), "\(write.stderr)")
            let read = sh("\(nobody) cat \(type)")
            #expect(read.status == 0 && read.stdout == "DMA-FQ\n")
            #expect(Syscall.text(type) == "DMA-FQ\n")
        }
    }

    @Test("root without CAP_SYS_RAWIO or CAP_SYS_ADMIN gets EACCES from the store", arguments: ["sys_rawio", "sys_admin"])
    func missingCapability(capability: String) throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/4/type")
            // The open succeeds (root owns the file); the store refuses.
            let result = bash("setpriv --bounding-set -\(capability) --inh-caps=-all bash -c 'echo identity > \(type)'")
            #expect(result.status != 0 && result.stderr.contains("write error: Permission denied"), "\(result.stderr)")
            #expect(Syscall.text(type) == "DMA-FQ\n")
            // The same write with every capability goes through.
            #expect(sh("echo identity > \(type)").status == 0)
        }
    }

    @Test("chmod 0666 lets anybody open type, but the store still checks capabilities")
    func chmodDoesNotGrant() throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/4/type")
            #expect(chmod(type, 0o666) == 0)
            #expect(Syscall.lstat(type)?.st_mode == S_IFREG | 0o666)
            let result = bash("setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'echo identity > \(type)'")
            #expect(result.stderr.contains("write error: Permission denied"), "\(result.stderr)")
            #expect(Syscall.text(type) == "DMA-FQ\n")
        }
    }
}
