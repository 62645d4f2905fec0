import Foundation
import Glibc
import Testing

/// States the write fuzzer found a dump could not bring back; each mounts
/// again now, into the same dump.
@Suite("Dump round trips") struct DumpRoundTripTests {
    @Test("a driver_override that is no driver's name (driver_set_override keeps any line)")
    func anyOverride() throws {
        try MountedMachine.with(arguments: ["--machine", "qemu-q35-alt"]) { m in
            #expect(Syscall.write(SysfsPCI(m).device("0000:00:1f.2", "driver_override"), "a/b c") == .ok(5))
            try expectDumpRoundTrip(m)
        }
    }

    @Test("a new_id given with its driver data, which new_id_store takes for an id matched already")
    func newIDWithDriverData() throws {
        try MountedMachine.with(arguments: ["--machine", "qemu-q35-alt"]) { m in
            let newID = SysfsPCI(m).driverKnob("e1000e", "new_id")
            #expect(Syscall.write(newID, "8086 10d3 0 0 0 0 0") == .ok(19))
            #expect(Syscall.write(newID, "1234 5678") == .ok(9))
            #expect(Syscall.write(newID, "1234 5678 0 0 0 0 0") == .ok(19))
            try expectDumpRoundTrip(m)
        }
    }

    @Test("a function without the multifunction bit that a rescan put in a group of its own")
    func regroupedFunction() throws {
        try MountedMachine.with(arguments: ["--machine", "qemu-q35-alt"]) { m in
            let pci = SysfsPCI(m)
            #expect(Syscall.write(pci.device("0000:06:00.1", "remove"), "1") == .ok(1))
            #expect(Syscall.write(pci.rescan, "1") == .ok(1))
            #expect(pci.members(16) == ["0000:06:00.1"])
            #expect(pci.members(12) == ["0000:06:00.0", "0000:06:00.2"])
            try expectDumpRoundTrip(m)
        }
    }
}
