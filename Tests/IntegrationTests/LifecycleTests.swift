import Foundation
import Glibc
import Testing

/// Starting and stopping the server as a user does.
@Suite("Mount lifecycle") struct LifecycleTests {
    @Test("a bad topology fails before mounting, naming the field")
    func badTopology() throws {
        let dir = try makeTemporaryDirectory()
        defer { rmdir(dir) }
        let file = dir + ".json"
        defer { unlink(file) }
        try #"{"iommu_units": [], "devices": [{"address": "0000:00:1g.0", "vendor": "0x8086", "device": "0x1", "class": "0x0", "iommu": null, "group": 0}]}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        let result = run(MountedMachine.binary, ["mount", dir, "--foreground", "--topology", file])
        #expect(result.status == 1)
        #expect(result.stderr.contains("devices[0].address"), "\(result.stderr)")
        #expect(!isMountPoint(dir))
    }

    @Test("a topology that is not UTF-8 fails before mounting, at the bad byte's line and column")
    func invalidUTF8Topology() throws {
        let dir = try makeTemporaryDirectory()
        defer { rmdir(dir) }
        let file = dir + ".json"
        defer { unlink(file) }
        let bytes = Array("{\n  \"kernel\": { \"command_line\": \"intel_iommu=on ".utf8) + [0xC3, 0x28] + Array("\" } }\n".utf8)
        #expect(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
        let result = run(MountedMachine.binary, ["mount", dir, "--foreground", "--topology", file])
        #expect(result.status == 1)
        #expect(result.stderr == "iommufs: \(file): line 2, column 47: invalid UTF-8 in a string (byte 0xc3); the file must be UTF-8\n",
                "\(result.stderr)")
        #expect(!isMountPoint(dir))
    }

    @Test("an unknown mount option is refused with a message")
    func badOption() throws {
        let result = run(MountedMachine.binary, ["mount", "/tmp", "-o", "writeback"])
        #expect(result.status != 0 && result.stderr.contains("unsupported mount option 'writeback'"))
    }

    @Test("SIGINT and SIGTERM unmount cleanly", arguments: [SIGINT, SIGTERM])
    func signalUnmounts(signal: Int32) throws {
        let machine = try MountedMachine.start(arguments: [])
        defer { machine.stop() }
        kill(machine.server.pid, signal)
        #expect(machine.server.wait() == 0)
        #expect(!isMountPoint(machine.root))
    }

    @Test("a stale mount left by a killed server is cleaned up by the next mount")
    func staleMount() throws {
        let first = try MountedMachine.start(arguments: [])
        kill(first.server.pid, SIGKILL)
        first.server.wait()
        // The kernel keeps the dead mount: statfs fails with ENOTCONN
        // (stat may still be answered from the attribute cache).
        var fs = statvfs()
        #expect(statvfs(first.root, &fs) == -1 && errno == ENOTCONN)
        let second = try MountedMachine.start(arguments: [], root: first.root)
        defer { second.stop() }
        #expect(second.serverLog.contains("stale"), "\(second.serverLog)")
        #expect(Syscall.text(second.path("kernel/iommu_groups/0/type")) == "DMA-FQ\n")
    }
}
