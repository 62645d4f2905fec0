import IOMMUCore
import SystemPackage
import Testing
import Topology

/// The embedded machine promises specific groups and behaviours (README).
@Suite struct DefaultMachineTests {
    let machine: Machine

    init() throws {
        machine = try Machine(spec: Topology.defaultMachine)
    }

    @Test func bootsIntoEightGroupsWithTheDocumentedMembersAndTypes() throws {
        let expected: [(members: [String], type: String)] = [
            (["0000:00:00.0"], "DMA-FQ"),
            (["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"], "DMA-FQ"),
            (["0000:00:14.0"], "DMA-FQ"),
            (["0000:00:1c.0", "0000:02:00.0"], "DMA-FQ"),
            (["0000:00:1c.4", "0000:03:00.0"], "DMA-FQ"),
            (["0000:00:1d.0", "0000:04:00.0"], "DMA"),
            (["0000:00:1e.0", "0000:05:00.0", "0000:05:01.0"], "DMA-FQ"),
            (["0000:00:1f.0", "0000:00:1f.3", "0000:00:1f.4"], "identity"),
        ]
        #expect(machine.groups.map(\.id) == Array(expected.indices))
        for (id, group) in expected.enumerated() {
            let booted = try #require(machine.group(id: id))
            #expect(booted.snapshot.devices.map(\.description) == group.members, "group \(id)")
            #expect(booted.typeText == group.type + "\n", "group \(id)")
        }
    }

    @Test func reservedRegionsAreTheMSIWindowPlusFirmwareRegions() throws {
        let msi = "0x00000000fee00000 0x00000000feefffff msi\n"
        #expect(try #require(machine.group(id: 1)).reservedRegionsText == msi)
        #expect(try #require(machine.group(id: 2)).reservedRegionsText
                == "0x000000003e2e0000 0x000000003e2fffff direct-relaxable\n" + msi)
        #expect(try #require(machine.group(id: 7)).reservedRegionsText
                == "0x0000000000000000 0x0000000000ffffff direct-relaxable\n" + msi)
    }

    @Test func devicesSitBehindTheirBridgesWithTheirBootDrivers() throws {
        let nvme = try #require(machine.device(at: PCIAddress(bus: 2, device: 0, function: 0)))
        #expect(nvme.sysfsPath == "devices/pci0000:00/0000:00:1c.0/0000:02:00.0")
        #expect(nvme.driver == PCIDriver(name: "nvme", managesDMA: false))
        let port = try #require(machine.device(at: PCIAddress(bus: 0, device: 0x1c, function: 0)))
        #expect(port.driver == PCIDriver(name: "pcieport", managesDMA: true))
        #expect(machine.device(at: PCIAddress(bus: 3, device: 0, function: 0))?.driver == nil)
        #expect(machine.units.map(\.sysfsPath) == ["devices/virtual/iommu/dmar0"])
    }

    @Test func typeWritesShowTheDocumentedOutcomes() throws {
        #expect(write("DMA", toGroup: 3) == .failure(.notPermitted))  // nvme bound
        #expect(write("DMA", toGroup: 4) == .success(3))  // the NIC is unbound
        #expect(write("identity", toGroup: 5) == .failure(.invalidArgument))  // untrusted
    }

    private func write(_ text: String, toGroup id: Int) -> Result<Int, Errno>? {
        Array(text.utf8).withUnsafeBytes { buffer in
            machine.group(id: id)?.storeType(buffer, caller: FullyPrivileged())
        }
    }
}
