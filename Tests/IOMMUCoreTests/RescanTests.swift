import IOMMUCore
import Testing

/// Devices re-added by a rescan (oracle README, "Grouping"): a function
/// other than 0 without the multifunction bit in its own header gets a new
/// group; one with the bit rejoins its old group.
@Suite("rescan grouping")
struct RescanTests {
    static let port = "0000:00:03.0"

    /// A root port with a 3-function device behind it, one group at boot;
    /// fn1's header has the multifunction bit clear.
    static func machine() throws -> Machine {
        var devices = [TestDevice(port, group: "port", driver: "pcieport").spec]
        for function in 0...2 {
            var spec = TestDevice("0000:01:00.\(function)", group: "mf", behind: port).spec
            spec.multifunction = function != 1
            devices.append(spec)
        }
        return try Machine(spec: MachineSpec(boot: BootOptions(commandLine: ""), units: [.intel()],
                                             drivers: PCIDriver.catalog, devices: devices))
    }

    static func members(_ machine: Machine) -> [Int: [String]] {
        Dictionary(uniqueKeysWithValues: machine.groups.map { ($0.id, $0.snapshot.devices.map(\.description)) })
    }

    @Test("at boot every function shares the group, whatever its header says")
    func boot() throws {
        #expect(Self.members(try Self.machine()) == [0: [Self.port], 1: ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2"]])
    }

    @Test("fn1 without the bit comes back alone; fn2 with it rejoins")
    func oneFunction() throws {
        let machine = try Self.machine()
        machine.remove(try machine.device("0000:01:00.1"))
        machine.rescan()
        #expect(Self.members(machine) == [0: [Self.port], 1: ["0000:01:00.0", "0000:01:00.2"], 2: ["0000:01:00.1"]])
        machine.remove(try machine.device("0000:01:00.2"))
        machine.rescan()
        #expect(Self.members(machine) == [0: [Self.port], 1: ["0000:01:00.0", "0000:01:00.2"], 2: ["0000:01:00.1"]])
    }

    @Test("all three removed: fn0 and fn2 share a new group, fn1 has its own")
    func allFunctions() throws {
        let machine = try Self.machine()
        machine.remove(try machine.device(Self.port))
        machine.rescan()
        #expect(Self.members(machine) == [0: [Self.port], 1: ["0000:01:00.0", "0000:01:00.2"], 2: ["0000:01:00.1"]])
    }
}
