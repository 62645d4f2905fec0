import Foundation
import Glibc
import Testing
import Topology

/// Starting and stopping the server as a user does, and as a user should
/// not but will: killed mid-load, stopped with requests outstanding, two
/// started on one directory at once, pointed at the wrong kind of path.
/// Every call that could hang on a broken mount runs in a child process
/// with a time limit (`runBounded`, `BoundedChild`), so a hang fails the
/// test instead of hanging it.
@Suite("Mount lifecycle") struct LifecycleTests {
    typealias D = DefaultPCI

    @Test("a bad topology fails before mounting, naming the field")
    func badTopology() throws {
        let dir = try makeTemporaryDirectory()
        defer { rmdir(dir) }
        let file = dir + ".json"
        defer { unlink(file) }
        try #"{"iommu_units": [], "devices": [{"address": "0000:00:1g.0", "vendor": "0x8086", "device": "0x1", "class": "0x0", "iommu": null, "group": 0}]}"#
            .write(toFile: file, atomically: true, encoding: .utf8)
        let result = runBounded(MountedMachine.binary, ["mount", dir, "--foreground", "--topology", file])
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
        let result = runBounded(MountedMachine.binary, ["mount", "/tmp", "-o", "writeback"])
        #expect(result.status != 0 && result.stderr.contains("unsupported mount option 'writeback' (supported: allow_other, nonempty)"))
    }

    // MARK: Mount points

    @Test("a missing path, a regular file and a non-empty directory are refused with a message and exit status 1, leaving nothing mounted")
    func badMountPoints() throws {
        let dir = try makeTemporaryDirectory()
        let file = dir + "/file", full = dir + "/full"
        defer {
            unlink(full + "/entry")
            unlink(file)
            rmdir(full)
            rmdir(dir)
        }
        try "".write(toFile: file, atomically: false, encoding: .utf8)
        mkdir(full, 0o755)
        try "".write(toFile: full + "/entry", atomically: false, encoding: .utf8)
        let cases = [
            (dir + "/missing", "mount point \(dir)/missing does not exist"),
            (file, "mount point \(file) is not a directory"),
            (full, "mount point \(full) is not empty: the mount would hide what is in it "
                + "(choose an empty directory, or add -o nonempty to mount over it anyway)"),
        ]
        for (path, message) in cases {
            let result = runBounded(MountedMachine.binary, ["mount", path, "--foreground"])
            #expect(result.status == 1, "\(path): \(result.stderr)")
            #expect(result.stderr == "iommufs: \(message)\n")
            #expect(mountCount(path) == 0)
            // A server that mounted all the same was killed: take its mount away.
            while mountCount(path) > 0, runBounded("/bin/umount", ["-l", path]).status == 0 {}
            unlink(MountedMachine.controlSocket(of: path))
        }
        #expect(Syscall.lstat(full + "/entry") != nil)
    }

    @Test("-o nonempty mounts over a directory that has entries, hiding them until the unmount")
    func nonEmptyOption() throws {
        let dir = try makeTemporaryDirectory()
        let entry = dir + "/entry"
        defer {
            unlink(entry)
            rmdir(dir)
        }
        try "".write(toFile: entry, atomically: false, encoding: .utf8)
        let machine = try MountedMachine.start(arguments: ["-o", "nonempty"], root: dir)
        #expect(Syscall.lstat(entry) == nil)
        #expect(Syscall.text(machine.path("kernel/iommu_groups/0/type")) == "DMA-FQ\n")
        machine.stop()
        #expect(mountCount(dir) == 0)
        #expect(Syscall.lstat(entry) != nil)
    }

    // MARK: Stopping

    @Test("SIGINT and SIGTERM with requests outstanding: a slow reset is answered, a writer mid-loop gets an errno, nothing stays mounted, exit status 0",
          arguments: [SIGINT, SIGTERM])
    func signalWithRequestsOutstanding(signal: Int32) throws {
        let topology = Topology.defaultMachineJSON.replacingOccurrences(
            of: #""ats": true,"#, with: #""ats": true, "reset_ms": 2000,"#)
        try withTopology(topology) { m in
            let uevent = m.path("devices/virtual/iommu/dmar0/uevent")
            let reset = try BoundedChild("/bin/bash", ["-c", "echo 1 > \(SysfsPCI(m).device(D.nic, "reset")) && echo answered"])
            let writer = try BoundedChild("/bin/bash", ["-c", "while echo change > \(uevent); do :; done; echo stopped"])
            usleep(300_000)
            try #require(reset.isRunning, "the 2 s reset is still outstanding")
            #expect(writer.isRunning)
            kill(m.server.pid, signal)
            let answered = reset.finish(seconds: 20)
            #expect(answered.status == 0 && answered.stdout == "answered\n", "\(answered.stderr)")
            // Its last write failed (the mount went away) instead of hanging.
            let looped = writer.finish(seconds: 20)
            #expect(looped.status == 0 && looped.stdout == "stopped\n", "\(looped.stderr)")
            #expect(m.server.wait(seconds: 20) == 0)
            #expect(mountCount(m.root) == 0)
            #expect(m.serverLog.contains("stopping on \(signal == SIGINT ? "SIGINT" : "SIGTERM"): unmounted \(m.root)"),
                    "\(m.serverLog)")
        }
    }

    @Test("SIGKILL mid-load: the load's calls fail (ENOTCONN, ECONNABORTED) instead of hanging, and the next server on the directory detaches the dead mount and serves")
    func killMidLoad() throws {
        let first = try MountedMachine.start(arguments: [])
        let type = first.path("kernel/iommu_groups/4/type")
        let load = try BoundedChild("/bin/bash", ["-c", "while echo identity > \(type) && cat \(type) > /dev/null && echo DMA-FQ > \(type); do :; done; echo stopped"])
        usleep(300_000)
        #expect(load.isRunning)
        kill(first.server.pid, SIGKILL)
        #expect(first.server.wait(seconds: 20) == 128 + SIGKILL)
        // A call in flight when the connection went gets ECONNABORTED
        // (fuse_abort_conn), a later one ENOTCONN.
        let stopped = load.finish(seconds: 20)
        #expect(stopped.stdout == "stopped\n", "\(stopped.stderr)")
        #expect(stopped.stderr.contains("Transport endpoint is not connected") || stopped.stderr.contains("Software caused connection abort"),
                "\(stopped.stderr)")
        // The kernel keeps the dead mount: statfs fails with ENOTCONN.
        let statfs = runBounded("/usr/bin/stat", ["-f", first.root])
        #expect(statfs.status == 1 && statfs.stderr.contains("Transport endpoint is not connected"), "\(statfs.stderr)")
        let second = try MountedMachine.start(arguments: [], root: first.root)
        defer { second.stop() }
        #expect(second.serverLog.contains("cleaned up a stale mount at \(first.root)"), "\(second.serverLog)")
        #expect(mountCount(first.root) == 1)
        let again = runBounded("/bin/bash", ["-c", "echo identity > \(type) && echo DMA-FQ > \(type) && cat \(type)"])
        #expect(again.status == 0 && again.stdout == "DMA-FQ\n", "\(again.stderr)")
    }

    // MARK: Two servers, one directory

    /// What two servers race for: an empty directory (40 tries), or one
    /// with the dead mount of a killed server on it (10 tries), which both
    /// find and only one may detach.
    enum RaceGround: CaseIterable, Sendable {
        case emptyDirectory, deadMount
        var tries: Int { self == .emptyDirectory ? 40 : 10 }
    }

    @Test("two servers started on one directory at the same moment: one serves, the other exits 1 saying why, and the mount answers",
          arguments: RaceGround.allCases)
    func racingServers(on ground: RaceGround) throws {
        for attempt in 1...ground.tries {
            let dir = try makeTemporaryDirectory()
            defer { removeDetachedServer(dir) }
            if ground == .deadMount {
                let killed = try MountedMachine.start(arguments: [], root: dir)
                kill(killed.server.pid, SIGKILL)
                #expect(killed.server.wait(seconds: 20) == 128 + SIGKILL)
                unlink(killed.logPath)
            }
            let servers = try [BoundedChild(MountedMachine.binary, ["mount", dir]), BoundedChild(MountedMachine.binary, ["mount", dir])]
            let results = servers.map { $0.finish(seconds: 30) }
            let winners = results.filter { $0.status == 0 }, losers = results.filter { $0.status == 1 }
            #expect(winners.count == 1 && losers.count == 1, "try \(attempt): \(results)")
            #expect(winners.first?.stderr == (ground == .deadMount ? "iommufs: cleaned up a stale mount at \(dir)\n" : ""), "try \(attempt)")
            #expect(losers.first?.stderr == "iommufs: \(dir) is already an iommufs mount point, served by another iommufs "
                    + "(unmount it first: fusermount3 -u \(dir))\n", "try \(attempt)")
            #expect(mountCount(dir) == 1, "try \(attempt)")
            let answer = runBounded("/usr/bin/stat", ["-c", "%F", dir + "/kernel/iommu_groups"])
            #expect(answer.status == 0 && answer.stdout == "directory\n", "try \(attempt): \(answer.stderr)")
            #expect(serverProcesses(mountedOn: dir).count == 1, "try \(attempt)")
        }
    }

    /// Unmounts `dir`, waits for the detached server(s) serving it to exit
    /// (killing them after 20 s) and removes the directory.
    private func removeDetachedServer(_ dir: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let servers = serverProcesses(mountedOn: dir)
        _ = runBounded("/bin/fusermount3", ["-u", dir])
        for pid in servers where !waitUntilGone(pid, seconds: 20) {
            Issue.record("the server \(pid) of \(dir) did not exit after the unmount", sourceLocation: sourceLocation)
            kill(pid, SIGKILL)
        }
        while mountCount(dir) > 0 {
            Issue.record("\(dir) is still mounted", sourceLocation: sourceLocation)
            guard runBounded("/bin/umount", ["-l", dir]).status == 0 else { break }
        }
        // Left behind only by a server that had to be killed.
        unlink(MountedMachine.controlSocket(of: dir))
        rmdir(dir)
    }

    // MARK: Diagnostics of a detached server

    @Test("a detached server logs to the system log: syslog(3), facility daemon, tagged iommufs[PID]")
    func detachedServerLogsToSyslog() throws {
        let dir = try makeTemporaryDirectory()
        let stage = dir + ".dev", socketPath = dir + ".syslog"
        mkdir(stage, 0o755)
        let syslog = try DatagramReceiver(path: socketPath)
        defer {
            syslog.close()
            unlink(socketPath)
            rmdir(stage)
            removeDetachedServer(dir)
        }
        // A private mount namespace whose /dev/log is this test's socket:
        // /dev becomes a tmpfs with the few nodes the server needs.
        let script = """
            set -e
            mount --rbind /dev "$1"
            mount -t tmpfs -o mode=0755 tmpfs /dev
            for node in null zero fuse urandom; do touch /dev/$node; mount --bind "$1/$node" /dev/$node; done
            touch /dev/log
            mount --bind "$2" /dev/log
            "$3" mount "$4"
            ls "$4/kernel/iommu_groups" > /dev/null
            fusermount3 -u "$4"
            """
        let result = runBounded("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", script, "sh",
                                                     stage, socketPath, MountedMachine.binary, dir], seconds: 30)
        try #require(result.status == 0, "\(result.stderr)")
        let message = syslog.receive(seconds: 20)
        // <30>: LOG_DAEMON (3 << 3) | LOG_INFO (6).
        #expect(message?.hasPrefix("<30>") == true, "\(message ?? "nothing logged")")
        #expect(message?.firstMatch(of: #/ iommufs\[\d+\]: /#) != nil, "\(message ?? "")")
        #expect(message?.hasSuffix(": \(dir) was unmounted; stopping") == true, "\(message ?? "")")
    }
}

/// A bound Unix datagram socket, standing in for syslogd's /dev/log.
private struct DatagramReceiver {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw MountedMachine.MountError(description: "cannot bind \(path): errno \(errno)") }
    }

    /// The next datagram as text, nil after `seconds` without one.
    func receive(seconds: Int32) -> String? {
        var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&ready, 1, seconds * 1000) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 8192)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
    }

    func close() { Glibc.close(fd) }
}
