import Foundation
import Glibc
import Testing

/// Reads and writes of `type` and `reserved_regions` through the mount,
/// with the results a shell script or a C program would see.
@Suite("Reads and writes") struct ReadWriteTests {
    static let bootTypes = ["DMA-FQ", "DMA-FQ", "DMA-FQ", "DMA-FQ", "DMA-FQ", "DMA", "DMA-FQ", "identity"]

    @Test("type shows each group's default domain")
    func readTypes() throws {
        try MountedMachine.with { m in
            for (group, type) in Self.bootTypes.enumerated() {
                #expect(Syscall.text(m.path("kernel/iommu_groups/\(group)/type")) == type + "\n")
            }
            let all = sh("cat \(m.path("kernel/iommu_groups"))/*/type")
            #expect(all.status == 0 && all.stdout.contains("identity\n"))
        }
    }

    @Test("reads follow seq_file: 1-byte reads, pread at an offset, past the end")
    func readOffsets() throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/5/type")
            #expect(Syscall.text(type, chunk: 1) == "DMA\n")
            #expect(Syscall.pread(type, offset: 2) == "A\n")
            #expect(Syscall.pread(type, offset: 100) == "")
        }
    }

    @Test("reserved_regions merges the members' regions in the kernel's order")
    func reservedRegions() throws {
        try MountedMachine.with { m in
            let msi = "0x00000000fee00000 0x00000000feefffff msi\n"
            #expect(Syscall.text(m.path("kernel/iommu_groups/1/reserved_regions")) == msi)
            #expect(Syscall.text(m.path("kernel/iommu_groups/2/reserved_regions"))
                    == "0x000000003e2e0000 0x000000003e2fffff direct-relaxable\n" + msi)
            #expect(Syscall.text(m.path("kernel/iommu_groups/7/reserved_regions"))
                    == "0x0000000000000000 0x0000000000ffffff direct-relaxable\n" + msi)
        }
    }

    @Test("echo into an unowned group changes its type; the shell sees exit 0")
    func writeUnowned() throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/4/type")
            for (word, shown) in [("identity", "identity"), ("DMA", "DMA"), ("DMA-FQ", "DMA-FQ"), ("identity", "identity"), ("auto", "DMA-FQ")] {
                let result = sh("echo \(word) > \(type)")
                #expect(result.status == 0 && result.stderr.isEmpty, "\(word): \(result.stderr)")
                #expect(Syscall.text(type) == shown + "\n")
            }
            #expect(Syscall.write(type, "identity") == .ok(8))
            #expect(Syscall.write(type, Array("DMA".utf8), offset: 100) == .ok(3))
            #expect(Syscall.text(type) == "DMA\n")
        }
    }

    @Test("the shell prints the kernel's errno texts", arguments: [
        // nvme is bound in group 3: no default-domain change while a driver uses it.
        ("3", "DMA", "Operation not permitted", "DMA-FQ"),
        ("3", "identity", "Operation not permitted", "DMA-FQ"),
        // An untrusted device insists on a DMA domain.
        ("5", "identity", "Invalid argument", "DMA"),
        // Group 7's audio and SMBus drivers are bound: ownership is checked
        // before the audio device's identity wish is.
        ("7", "DMA", "Operation not permitted", "identity"),
        ("4", "dma", "Invalid argument", "DMA-FQ"),
        ("4", "blocked", "Invalid argument", "DMA-FQ"),
    ])
    func shellErrors(group: String, word: String, message: String, typeAfter: String) throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/\(group)/type")
            let result = bash("echo \(word) > \(type)")
            #expect(result.status != 0)
            #expect(result.stderr.contains("write error: " + message), "\(result.stderr)")
            // dash, Debian's /bin/sh, only says "I/O error" for any failed write.
            #expect(sh("echo \(word) > \(type)").status != 0)
            #expect(Syscall.text(type) == typeAfter + "\n")
        }
    }

    @Test("an untrusted device's group: live DMA → DMA-FQ, then only DMA")
    func untrustedGroup() throws {
        try MountedMachine.with { m in
            // Group 5 boots DMA: its external NIC is untrusted.
            let type = m.path("kernel/iommu_groups/5/type")
            // The flush queue comes up on the existing domain (no requirement check).
            #expect(Syscall.write(type, "DMA-FQ\n") == .ok(7))
            #expect(Syscall.text(type) == "DMA-FQ\n")
            // A new DMA-FQ domain is refused: the untrusted device requires DMA.
            #expect(Syscall.write(type, "DMA-FQ") == .failed(EINVAL))
            #expect(Syscall.write(type, "auto") == .ok(4))
            #expect(Syscall.text(type) == "DMA\n")
        }
    }

    @Test("edge strings: empty write, NUL, 5000 bytes, page clamp")
    func edgeStrings() throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/4/type")
            #expect(Syscall.write(type, []) == .ok(0))
            #expect(Syscall.write(type, Array("DMA\0junk".utf8)) == .ok(8))
            #expect(Syscall.text(type) == "DMA\n")
            // The store sees the first 4096 bytes: no NUL, so no token matches.
            #expect(Syscall.write(type, Array("identity\n".utf8) + Array(repeating: UInt8(ascii: "x"), count: 4991)) == .failed(EINVAL))
            #expect(Syscall.text(type) == "DMA\n")
            // NUL-padded, the token matches and the write is cut to a page.
            #expect(Syscall.write(type, Array("identity".utf8) + Array(repeating: 0, count: 4992)) == .ok(4096))
            #expect(Syscall.text(type) == "identity\n")
            for bad in ["DMA\n\n", "\nDMA", "DMA\r\n", "DMA\t", " DMA", "Identity", "DMA_FQ"] {
                #expect(Syscall.write(type, bad) == .failed(EINVAL), "\(bad.debugDescription)")
            }
            #expect(Syscall.text(type) == "identity\n")
        }
    }

    @Test("opening read-only attributes for writing is EACCES even for root")
    func readOnlyAttributes() throws {
        try MountedMachine.with { m in
            #expect(Syscall.openOutcome(m.path("kernel/iommu_groups/1/reserved_regions"), O_WRONLY) == .failed(EACCES))
            #expect(Syscall.openOutcome(m.path("devices/pci0000:00/0000:00:14.0/vendor"), O_RDWR) == .failed(EACCES))
            let result = sh("echo x > \(m.path("kernel/iommu_groups/1/reserved_regions"))")
            #expect(result.stderr.contains("Permission denied"))
            #expect(Syscall.write(m.path("kernel/iommu_groups/1/type"), Array("DMA".utf8), flags: O_RDONLY) == .failed(EBADF))
        }
    }

    @Test("the tree refuses what sysfs refuses")
    func mutationsRefused() throws {
        try MountedMachine.with { m in
            let groups = m.path("kernel/iommu_groups")
            #expect(sh("mkdir \(groups)/99").stderr.contains("Operation not permitted"))
            #expect(sh("rmdir \(groups)/4").stderr.contains("Operation not permitted"))
            #expect(sh("rm -f \(groups)/4/type").stderr.contains("Operation not permitted"))
            #expect(sh("echo x > \(groups)/4/newfile").stderr.contains("Permission denied"))
            #expect(sh("mv \(groups)/4/type \(groups)/4/type2").stderr.contains("Operation not permitted"))
            #expect(sh("truncate -s 0 \(groups)/4/type").status == 0)
            #expect(Syscall.openOutcome(groups + "/9999/type", O_RDONLY) == .failed(ENOENT))
        }
    }

    @Test("concurrent writers on one group serialize on the group mutex")
    func concurrentWriters() throws {
        try MountedMachine.with { m in
            let type = m.path("kernel/iommu_groups/4/type")
            let words = ["identity", "DMA", "DMA-FQ", "auto"]
            let failures = ManagedCounter()
            DispatchQueue.concurrentPerform(iterations: 8) { worker in
                for i in 0..<50 {
                    let word = words[(worker + i) % words.count]
                    if Syscall.write(type, word) != .ok(word.utf8.count) { failures.increment() }
                }
            }
            #expect(failures.value == 0)
            #expect(["identity\n", "DMA\n", "DMA-FQ\n"].contains(Syscall.text(type)))
        }
    }
}

/// A counter shared by concurrent test workers.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
