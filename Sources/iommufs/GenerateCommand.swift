import ArgumentParser
import Glibc

/// `iommufs generate`: a synthetic machine of any size, for benchmarks.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Print a topology with many groups, for benchmarks and scale tests.",
        discussion: """
            Device k (group k / devices-per-group) is function k & 7 of device (k >> 3) & 31 on \
            root bus (k >> 8) & 255 of PCI domain k >> 16; every device sits behind one VT-d unit \
            with the MSI window, unbound. Every 8th group also has a direct-relaxable region.

            Example:
              iommufs generate --groups 50000 --devices-per-group 2 > big.json
              iommufs mount mnt --topology big.json
            """
    )

    @Option(help: ArgumentHelp("How many IOMMU groups. Example: --groups 4096", valueName: "n"))
    var groups: Int = 64

    @Option(help: ArgumentHelp("Devices in each group. Example: --devices-per-group 2", valueName: "n"))
    var devicesPerGroup: Int = 2

    func validate() throws {
        guard groups > 0 else { throw ValidationError("--groups must be at least 1") }
        guard devicesPerGroup > 0 else { throw ValidationError("--devices-per-group must be at least 1") }
        guard groups * devicesPerGroup <= 0x1_0000 * 0x1_0000 else {
            throw ValidationError("at most 2^32 devices (65536 PCI domains of 65536 functions)")
        }
    }

    func run() throws {
        var out = OutputBuffer()
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
