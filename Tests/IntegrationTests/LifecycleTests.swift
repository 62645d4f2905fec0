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
        try #"{"devices": [{"address": "0000:00:1g.0", "vendor": "0x8086", "device": "0x1", "class": "0x0", "iommu": null, "group": 0}]}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        let result = run(MountedMachine.binary, ["mount", dir, "--foreground", "--topology", file])
        #expect(result.status == 1)
        #expect(result.stderr.contains("devices[0].address"), "\(result.stderr)")
        #expect(!(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)).contains(dir))
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
        kill(machine.process.processIdentifier, signal)
        machine.process.waitUntilExit()
        #expect(machine.process.terminationStatus == 0)
        #expect(!machine.isMounted)
        #expect(!(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)).contains(machine.root))
    }

    @Test("a stale mount left by a killed server is cleaned up by the next mount")
    func staleMount() throws {
        let first = try MountedMachine.start(arguments: [])
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        // The kernel keeps the dead mount: stat fails with ENOTCONN.
        #expect(Syscall.lstat(first.path("kernel")) == nil && errno == ENOTCONN)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: MountedMachine.binary)
        process.arguments = ["mount", first.root, "--foreground", "-o", "allow_other"]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let second = MountedMachine(root: first.root, process: process)
        defer { second.stop() }
        let deadline = Date().addingTimeInterval(20)
        while !second.isMounted && process.isRunning && Date() < deadline { usleep(10_000) }
        #expect(second.isMounted)
        #expect(try Syscall.read(second.path("kernel/iommu_groups/0/type")).get() == "DMA-FQ\n")
    }
}
