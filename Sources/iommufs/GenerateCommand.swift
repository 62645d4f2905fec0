import ArgumentParser
import Glibc
import Topology

/// `iommufs generate`: a synthetic machine of any size, for benchmarks.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Print a topology: a synthetic machine with many groups, or a built-in machine's description.",
        discussion: """
            Device k (group k / devices-per-group) is function k & 7 of device (k >> 3) & 31 on \
            root bus (k >> 8) & 255 of PCI domain k >> 16; every device sits behind one VT-d unit \
            with the MSI window, unbound. Every 8th group also has a direct-relaxable region.

            With --machine, the description of a built-in machine instead (\(Topology.builtinMachines.map(\.name).joined(separator: ", "))), \
            to read or to edit into a machine of one's own.

            Examples:
              iommufs generate --groups 50000 --devices-per-group 2 > big.json
              iommufs mount mnt --topology big.json
              iommufs generate --machine qemu-q35-vtd > qemu-q35-vtd.json
            """
    )

    @Option(help: ArgumentHelp("How many IOMMU groups (default 64). Example: --groups 4096", valueName: "n"))
    var groups: Int?

    @Option(help: ArgumentHelp("Devices in each group (default 2). Example: --devices-per-group 2", valueName: "n"))
    var devicesPerGroup: Int?

    @Option(help: ArgumentHelp("Print this built-in machine's description. Example: --machine qemu-q35-alt", valueName: "name"))
    var machine: String?

    func validate() throws {
        if let machine {
            guard groups == nil, devicesPerGroup == nil else {
                throw ValidationError("--machine prints a built-in machine; it takes no --groups or --devices-per-group")
            }
            guard Topology.builtinMachines.contains(where: { $0.name == machine }) else {
                throw ValidationError("unknown machine '\(machine)' (built-in: \(Topology.builtinMachines.map(\.name).joined(separator: ", ")))")
            }
            return
        }
        guard groupCount > 0 else { throw ValidationError("--groups must be at least 1") }
        guard groupSize > 0 else { throw ValidationError("--devices-per-group must be at least 1") }
        let (devices, overflow) = groupCount.multipliedReportingOverflow(by: groupSize)
        guard !overflow, devices <= 0x1_0000 * 0x1_0000 else {
            throw ValidationError("at most 2^32 devices (65536 PCI domains of 65536 functions)")
        }
    }

    private var groupCount: Int { groups ?? 64 }
    private var groupSize: Int { devicesPerGroup ?? 2 }

    func run() throws {
        var out = OutputBuffer()
        if let machine, let entry = Topology.builtinMachines.first(where: { $0.name == machine }) {
            out.append(entry.json.hasSuffix("\n") ? entry.json : entry.json + "\n")
            out.flush()
            return
        }
        let groups = groupCount, devicesPerGroup = groupSize
        out.append("""
            {
              "iommu_units": [
                { "name": "dmar0", "family": "intel",
                  "reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }
              ],
              "devices": [

            """)
        for k in 0..<(groups * devicesPerGroup) {
            let group = k / devicesPerGroup
            let address = hex(k >> 16, 4) + ":" + hex((k >> 8) & 0xff, 2) + ":" + hex((k >> 3) & 0x1f, 2) + "." + String(k & 7)
            out.append(k == 0 ? "    " : ",\n    ")
            out.append("{ \"address\": \"" + address + "\", \"vendor\": \"0x8086\", \"device\": \"0x10d3\", "
                       + "\"class\": \"0x020000\", \"iommu\": \"dmar0\", \"group\": " + String(group))
            if group % 8 == 0 {
                out.append(", \"reserved_regions\": [ { \"start\": \"0x3e2e0000\", \"end\": \"0x3e2fffff\", \"type\": \"direct-relaxable\" } ]")
            }
            out.append(" }")
        }
        out.append("\n  ]\n}\n")
        out.flush()
    }

    private func hex(_ value: Int, _ width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

/// Buffered writes to stdout (Swift 6 forbids the global `stdout` stream).
struct OutputBuffer {
    private var bytes: [UInt8] = []

    mutating func append(_ text: String) {
        bytes.append(contentsOf: text.utf8)
        if bytes.count > 1 << 16 { flush() }
    }

    mutating func flush() {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            offset += n
        }
        bytes.removeAll(keepingCapacity: true)
    }
}
