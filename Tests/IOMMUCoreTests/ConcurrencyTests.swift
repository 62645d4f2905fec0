import Foundation
import IOMMUCore
import SystemPackage
import Testing
import TestSupport
import Topology

/// The core API under concurrent driver binding, hot-plug, resets, SR-IOV,
/// user ownership and `type` writes: every call answers with an errno the
/// kernel could give, and the group invariants of kernel-behaviour §5–§7
/// hold whenever the machine is quiet.
@Suite("Concurrency")
struct ConcurrencyTests {
    typealias M = ConcurrencyMachine

    // MARK: Deterministic cases the mount cannot reach yet (no VFIO ioctls)

    @Test("a driver that uses the DMA API cannot bind while a user owns the group (EBUSY); vfio-pci can")
    func bindWhileUserOwned() throws {
        let machine = try M.boot()
        let nvme = try machine.device(M.nvme)
        let group = try #require(nvme.group)
        // nvme holds a reference: the group cannot be claimed.
        #expect(group.claimDMAOwner(M.user) == .notPermitted)
        #expect(machine.detach(.named("nvme"), from: nvme) == nil)
        #expect(group.claimDMAOwner(M.user) == nil)
        #expect(group.snapshot.ownerCount == 1 && group.snapshot.owner == M.user)

        // bind_store and drivers_probe both run really_probe → EBUSY, which
        // drivers_probe_store answers as EINVAL (any failing probe).
        #expect(machine.attach(.named("nvme"), to: nvme) == .resourceBusy)
        #expect(machine.probe(nvme) == .invalidArgument)
        #expect(nvme.driver == nil)
        #expect(group.snapshot.ownerCount == 1)
        // vfio-pci manages DMA itself: it binds, and takes no reference.
        #expect(M.setOverride(machine, nvme, "vfio-pci") == nil)
        #expect(machine.attach(.named("vfio-pci"), to: nvme) == nil)
        #expect(group.snapshot.ownerCount == 1)
        #expect(machine.detach(.named("vfio-pci"), from: nvme) == nil)
        #expect(M.setOverride(machine, nvme, "\n") == nil)

        group.releaseDMAOwner()
        #expect(group.snapshot.ownerCount == 0 && group.snapshot.isOnDefaultDomain)
        #expect(machine.attach(.named("nvme"), to: nvme) == nil)
        #expect(group.snapshot.ownerCount == 1)
        M.expectInvariants(machine)
    }

    @Test("while an ATS device resets, its group refuses domain changes and claims (EBUSY), not the live DMA-FQ switch")
    func resetFence() throws {
        let machine = try M.boot(resetDuration: .milliseconds(300))
        let nic = try machine.device(M.nic)
        let group = try #require(nic.group)
        #expect(group.write("DMA") == .success(3))
        let reset = try M.startReset(machine, nic, fencing: group)

        #expect(group.write("identity") == .failure(.resourceBusy))
        #expect(group.claimDMAOwner(M.user) == .resourceBusy)
        #expect(group.write("DMA") == .success(3))
        #expect(group.write("DMA-FQ") == .success(6))
        #expect(group.snapshot.attachedPerDevice.contains(.blocked))
        // Still within the reset: the assertions above saw the fence.
        #expect(reset.withLock { $0 } == nil, "the reset ended before the checks")

        while reset.withLock({ $0 }) == nil { usleep(1000) }
        #expect(reset.withLock { $0 } == .some(nil))
        #expect(!group.isResetting && group.snapshot.deviceDomainsMatchGroup)
        #expect(group.write("identity") == .success(8))
        #expect(group.claimDMAOwner(M.user) == nil)
        group.releaseDMAOwner()
        M.expectInvariants(machine)
    }

    @Test("a sibling hot-added while an ATS device resets attaches to the group's domain, not the blocking one")
    func siblingAddedDuringReset() throws {
        let json = Topology.defaultMachineJSON.replacingOccurrences(of: #""group": 1, "driver": "nouveau" }"#,
                                                                    with: #""group": 1, "driver": "nouveau", "ats": true, "reset_ms": 300 }"#)
        let machine = try TopologyDocument(json.utf8, source: "gpu-ats.json").boot()
        let gpu = try machine.device("0000:01:00.0"), audio = try machine.device("0000:01:00.1")
        let group = try #require(gpu.group)
        machine.remove(audio)
        let reset = try M.startReset(machine, gpu, fencing: group)
        machine.rescan()
        let during = group.snapshot
        #expect(reset.withLock { $0 } == nil, "the reset ended before the rescan")
        // Root port, GPU (fenced), audio (on the group's domain).
        #expect(during.devices.map(\.description) == ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"])
        #expect(during.attachedPerDevice == [during.attachedDomainType, .blocked, during.attachedDomainType])
        while reset.withLock({ $0 }) == nil { usleep(1000) }
        #expect(group.snapshot.deviceDomainsMatchGroup)
        M.expectInvariants(machine)
    }

    @Test("a remove through a stale handle (the device is already gone) leaves the devices that replaced it alone")
    func staleRemove() throws {
        // The mount's `remove` store holds the Device it was created for; a
        // writer that opened it before a concurrent remove + rescan runs it on
        // the old device. The kernel cannot get there: remove_store acts only
        // if device_remove_file_self() wins, which it cannot for a removed file.
        let machine = try M.boot()
        let oldBridge = try machine.device(M.bridge)
        machine.remove(oldBridge)
        machine.rescan()
        let present = Set(machine.devices.map(\.address.description))
        machine.remove(oldBridge)
        #expect(Set(machine.devices.map(\.address.description)) == present)
        M.expectInvariants(machine)
    }

    // MARK: The mix

    @Test("threads binding, probing, removing, rescanning, resetting, claiming and writing type keep the invariants")
    func mixedTraffic() throws {
        let machine = try M.boot(resetDuration: .milliseconds(2))
        let unexpected = SharedValue<[String]>([])
        let calls = SharedValue(0)
        let tally = SharedValue<[String: Int]>([:])
        for round in 0..<6 {
            let deadline = ContinuousClock.now + .milliseconds(500)
            let done = DispatchGroup()
            for (index, worker) in M.workers.enumerated() {
                done.enter()
                let thread = Thread {
                    var random = SplitMix64(seed: UInt64(round * 100 + index))
                    while ContinuousClock.now < deadline {
                        let (name, error) = worker(machine, &random)
                        calls.withLock { $0 += 1 }
                        let key = String(name.split(separator: " ").first ?? "") + " -> " + (error.map { "\($0)" } ?? "ok")
                        tally.withLock { $0[key, default: 0] += 1 }
                        if let error, !M.kernelErrnos.contains(error) {
                            unexpected.withLock { $0.append("\(name): \(error)") }
                        }
                    }
                    done.leave()
                }
                thread.start()
            }
            let finished = done.wait(timeout: .now() + 30)
            try #require(finished == .success, "round \(round): a worker hung")
            // Quiet now: the invariants must hold exactly.
            M.expectInvariants(machine, "after round \(round)")
        }
        #expect(unexpected.withLock { Array($0.prefix(20)) } == [])
        #expect(calls.withLock { $0 } > 1000)
        // Each kind of call went through at least once, and the fence was seen.
        let seen = tally.withLock { Set($0.keys) }
        for key in ["type -> ok", "type -> \(Errno.resourceBusy)", "bind -> ok", "unbind -> ok", "drivers_probe -> ok",
                    "remove -> ok", "rescan -> ok", "reset -> ok", "claim -> ok", "sriov_numvfs -> ok"] {
            #expect(seen.contains(key), "never: \(key)")
        }

        // Everything comes back with a rescan, each device in one group.
        machine.rescan()
        M.expectInvariants(machine, "after the final rescan")
        let addresses = Set(machine.devices.filter { $0.physicalFunction == nil }.map(\.address.description))
        #expect(addresses == Set(M.devices.map(\.address.description)))
    }
}

// MARK: - The machine and the workers

/// A small machine in the shape of the default one: a root port with an
/// NVMe behind it, a root port with an unbound ATS SR-IOV NIC, a PCI bridge
/// with a bound NIC and an unbound USB controller.
enum ConcurrencyMachine {
    /// Resets `device` on a thread of its own and returns once `group` is
    /// fenced; the value is the reset's result once it has ended.
    static func startReset(_ machine: Machine, _ device: Device, fencing group: IOMMUGroup) throws -> SharedValue<Errno??> {
        let reset = SharedValue<Errno??>(nil)
        Thread { let r = machine.reset(device); reset.withLock { $0 = .some(r) } }.start()
        let started = ContinuousClock.now
        while !group.isResetting && ContinuousClock.now - started < .seconds(5) { usleep(100) }
        try #require(group.isResetting, "the reset did not start")
        return reset
    }

    static let nvme = "0000:02:00.0"
    static let nic = "0000:03:00.0"
    static let bridge = "0000:00:1e.0"
    static let rtl = "0000:05:00.0"
    static let usb = "0000:05:01.0"
    static let user = DMAOwner("vfio-container")

    /// What a kernel store can answer besides success.
    static let kernelErrnos: Set<Errno> = [.notPermitted, .invalidArgument, .resourceBusy, .noDevice, .noSuchFileOrDirectory]

    static let devices: [MachineSpec.DeviceSpec] = {
        func bridge(_ a: String, _ group: String, driver: String?) -> MachineSpec.DeviceSpec {
            var spec = TestDevice(a, group: group, driver: driver).spec
            spec.classCode = 0x060400
            spec.resetMethods = []
            return spec
        }
        var nic = TestDevice(ConcurrencyMachine.nic, group: "nic", behind: "0000:00:1c.4").spec
        nic.nativeDriver = "e1000e"
        nic.ats = true
        nic.sriov = .init(totalVFs: 3, offset: 128, stride: 4, vfDeviceID: 0x10ed, vfDriver: "virtio-pci")
        return [
            TestDevice("0000:00:00.0", group: "host").spec,
            bridge("0000:00:1c.0", "nvme", driver: "pcieport"),
            TestDevice(ConcurrencyMachine.nvme, group: "nvme", driver: "nvme", behind: "0000:00:1c.0").spec,
            bridge("0000:00:1c.4", "nic", driver: "pcieport"),
            nic,
            bridge(ConcurrencyMachine.bridge, "pci", driver: nil),
            TestDevice(rtl, group: "pci", driver: "e1000", behind: ConcurrencyMachine.bridge).spec,
            TestDevice(usb, group: "pci", behind: ConcurrencyMachine.bridge).spec,
        ]
    }()

    static func boot(resetDuration: Duration = .milliseconds(2)) throws -> Machine {
        let specs = devices.map { d -> MachineSpec.DeviceSpec in
            var d = d
            d.resetDuration = resetDuration
            return d
        }
        return try Machine(spec: MachineSpec(boot: BootOptions(commandLine: ""), units: [.intel()],
                                             drivers: PCIDriver.catalog, devices: specs))
    }

    /// A write of `text` to the device's `driver_override`.
    static func setOverride(_ machine: Machine, _ device: Device, _ text: String) -> Errno? {
        Array(text.utf8).withUnsafeBytes { machine.setDriverOverride(device, $0) }
    }

    typealias Worker = @Sendable (Machine, inout SplitMix64) -> (String, Errno?)

    /// One thread each; every call returns what it did and the errno.
    static let workers: [Worker] = [
        // type writes on the three groups that change
        { machine, random in
            let address = random.pick([nvme, nic, usb])
            let word = random.pick(["identity", "DMA", "DMA-FQ", "auto", "bogus"])
            guard let group = machine.device(at: PCIAddress(testing: address))?.group else { return ("skipped (absent)", nil) }
            if case .failure(let e) = group.write(word) { return ("type \(word) of \(address)", e) }
            return ("type \(word) of \(address)", nil)
        },
        // bind_store / unbind_store of the native drivers
        { machine, random in
            let (address, driver) = random.pick([(nvme, "nvme"), (rtl, "e1000"), (nic, "e1000e")])
            guard let device = machine.device(at: PCIAddress(testing: address)) else { return ("skipped (absent)", nil) }
            let bind = random.next() % 2 == 0
            let error = bind ? machine.attach(.named(driver), to: device) : machine.detach(.named(driver), from: device)
            return ("\(bind ? "bind" : "unbind") \(driver) \(address)", error)
        },
        // drivers_probe, and vfio-pci by override on the USB controller
        { machine, random in
            let address = random.pick([nvme, rtl, usb, nic])
            guard let device = machine.device(at: PCIAddress(testing: address)) else { return ("skipped (absent)", nil) }
            if address == usb && random.next() % 3 == 0 {
                let name = random.pick(["vfio-pci", "\n"])
                let error = setOverride(machine, device, name)
                if name == "\n", device.driver?.name == "vfio-pci" { _ = machine.detach(.named("vfio-pci"), from: device) }
                return ("driver_override \(address)", error)
            }
            return ("drivers_probe \(address)", machine.probe(device))
        },
        // remove and rescan
        { machine, random in
            switch random.next() % 4 {
            case 0: machine.rescan(); return ("rescan", nil)
            default:
                let address = random.pick([nvme, usb, bridge])
                if let device = machine.device(at: PCIAddress(testing: address)) { machine.remove(device) }
                return ("remove \(address)", nil)
            }
        },
        // function resets, ATS (fenced) and not
        { machine, random in
            let candidates = [nic, nvme] + (machine.device(at: PCIAddress(testing: nic))?.virtualFunctions.map(\.address.description) ?? [])
            let address = random.pick(candidates)
            guard let device = machine.device(at: PCIAddress(testing: address)) else { return ("skipped (absent)", nil) }
            return ("reset \(address)", machine.reset(device))
        },
        // a user (VFIO) claims a group, holds it a moment, releases it
        { machine, random in
            let address = random.pick([nvme, nic, usb])
            guard let group = machine.device(at: PCIAddress(testing: address))?.group else { return ("skipped (absent)", nil) }
            let error = group.claimDMAOwner(user)
            if error == nil {
                usleep(UInt32(random.next() % 500))
                group.releaseDMAOwner()
            }
            return ("claim group of \(address)", error)
        },
        // SR-IOV on the NIC (needs its PF driver)
        { machine, random in
            guard let pf = machine.device(at: PCIAddress(testing: nic)) else { return ("skipped (absent)", nil) }
            let count = random.pick([0, 0, 2, 3])
            return ("sriov_numvfs \(count)", machine.setNumberOfVFs(pf, count))
        },
    ]

    /// kernel-behaviour §5–§7, checked on a quiet machine.
    static func expectInvariants(_ machine: Machine, _ when: String = "",
                                 sourceLocation: SourceLocation = #_sourceLocation) {
        for violation in machine.invariantViolations() {
            Issue.record("\(when): \(violation)", sourceLocation: sourceLocation)
        }
    }
}

/// A value shared by test threads, behind its own lock (a pthread mutex,
/// which ThreadSanitizer follows).
final class SharedValue<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

