import IOMMUCore
import SystemPackage

/// Machine descriptions ("topologies"): JSON documents that say which IOMMU
/// units, PCI devices, drivers and groups a machine has, turned into the
/// `MachineSpec` that `Machine(spec:)` boots.
public enum Topology {
    /// Reads and decodes the machine description at `path`; errors name the
    /// path as given.
    public static func load(contentsOf path: String) throws(TopologyError) -> MachineSpec {
        let bytes: [UInt8]
        do {
            bytes = try contents(of: path)
        } catch {
            throw TopologyError(source: path, location: "", reason: "cannot read the file: \(error)")
        }
        return try decode(bytes, source: path)
    }

    /// Decodes a machine description from UTF-8 bytes (a `[UInt8]`, `Data`,
    /// or a string's `utf8` view). `source` names the document in errors.
    public static func decode(_ bytes: some Collection<UInt8>, source: String) throws(TopologyError) -> MachineSpec {
        let contiguous = bytes.withContiguousStorageIfAvailable { buffer in
            Result { () throws(TopologyError) in try decode(buffer: buffer, source: source) }
        }
        if let contiguous { return try contiguous.get() }
        return try Array(bytes).withUnsafeBufferPointer { buffer in
            Result { () throws(TopologyError) in try decode(buffer: buffer, source: source) }
        }.get()
    }

    /// The machine `iommufs mount` serves without `--topology`, decoded
    /// from `defaultMachineJSON`.
    public static let defaultMachine: MachineSpec = {
        do {
            return try decode(defaultMachineJSON.utf8, source: "default machine")
        } catch {
            fatalError("the embedded default machine is invalid: \(error)")
        }
    }()

    private static func decode(buffer: UnsafeBufferPointer<UInt8>, source: String) throws(TopologyError) -> MachineSpec {
        let document: JSON
        do {
            document = try JSONParser.parse(buffer)
        } catch {
            let (line, column) = error.lineAndColumn(in: buffer)
            throw TopologyError(source: source, location: "line \(line), column \(column)", reason: error.reason)
        }
        do {
            return try MachineDecoder.machine(document)
        } catch {
            throw TopologyError(source: source, location: error.renderedPath, reason: error.reason)
        }
    }

    /// The whole file, read in large chunks (a captured machine can be tens
    /// of megabytes).
    private static func contents(of path: String) throws -> [UInt8] {
        let file = try FileDescriptor.open(path, .readOnly)
        return try file.closeAfter {
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let count = try chunk.withUnsafeMutableBytes { try file.read(into: $0) }
                if count == 0 { return bytes }
                bytes += chunk[..<count]
            }
        }
    }
}

/// Why a machine description cannot be used, and where in it.
public struct TopologyError: Error, Equatable, CustomStringConvertible {
    /// The file (or other label) the document came from.
    public var source: String
    /// A JSON path such as `devices[3].address`, `line 3, column 7` for
    /// malformed JSON, or empty when the problem is the whole document.
    public var location: String
    public var reason: String

    public init(source: String, location: String, reason: String) {
        self.source = source
        self.location = location
        self.reason = reason
    }

    /// `big.json: devices[3].address: "0000:00:1g.0" is not a PCI address (expected dddd:bb:dd.f)`
    public var description: String {
        ([source] + (location.isEmpty ? [] : [location]) + [reason]).joined(separator: ": ")
    }
}
