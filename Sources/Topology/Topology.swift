import IOMMUCore
import SystemPackage

/// Machine descriptions ("topologies"): JSON documents that say which IOMMU
/// units, PCI devices, drivers and groups a machine has, turned into the
/// `MachineSpec` that `Machine(spec:)` boots. A document may also carry a
/// `state` (a dump's); `TopologyDocument` boots and restores it, these
/// functions give the description alone.
public enum Topology {
    /// Reads and decodes the machine description at `path`; errors name the
    /// path as given.
    public static func load(contentsOf path: String) throws(TopologyError) -> MachineSpec {
        try TopologyDocument.load(contentsOf: path).spec
    }

    /// Decodes a machine description from UTF-8 bytes (a `[UInt8]`, `Data`,
    /// or a string's `utf8` view). `source` names the document in errors.
    public static func decode(_ bytes: some Collection<UInt8>, source: String) throws(TopologyError) -> MachineSpec {
        try TopologyDocument(bytes, source: source).spec
    }

    /// The machine `iommufs mount` serves without `--topology`, decoded
    /// from `defaultMachineJSON`.
    public static var defaultMachine: MachineSpec { TopologyDocument.defaultMachine.spec }
}

/// A decoded document: the machine description, and the `state` it
/// restores when booted. It keeps its text, so that `dump` can write the
/// description back as it was given, with the machine's state in place of
/// the one it came with.
public struct TopologyDocument: Sendable {
    /// Names the document in errors (the file, or "default machine").
    public let source: String
    /// The description, without the state.
    public let spec: MachineSpec
    private let state: MachineState?
    /// `MachineSpec.groupIDs` for restoring the state.
    private let restoredGroupIDs: [PCIAddress: Int]
    private let textBytes: [UInt8]

    /// Reads and decodes the document at `path`; errors name the path as given.
    public static func load(contentsOf path: String) throws(TopologyError) -> TopologyDocument {
        let bytes: [UInt8]
        do {
            bytes = try contents(of: path)
        } catch {
            throw TopologyError(source: path, location: "", reason: "cannot read the file: \(error)")
        }
        return try TopologyDocument(bytes, source: path)
    }

    /// The embedded default machine (`Topology.defaultMachineJSON`).
    public static let defaultMachine: TopologyDocument = {
        do {
            return try TopologyDocument(Topology.defaultMachineJSON.utf8, source: "default machine")
        } catch {
            fatalError("the embedded default machine is invalid: \(error)")
        }
    }()

    /// Decodes UTF-8 bytes; `source` names the document in errors.
    public init(_ bytes: some Collection<UInt8>, source: String) throws(TopologyError) {
        let text = Array(bytes)
        let decoded = try text.withUnsafeBufferPointer { buffer throws(TopologyError) in
            let root = try Self.parse(buffer, source: source)
            do throws(Problem) {
                return try MachineDecoder.document(root)
            } catch {
                throw TopologyError(source: source, location: error.renderedPath, reason: error.reason)
            }
        }
        self.source = source
        self.spec = decoded.spec
        self.state = decoded.state?.0
        self.restoredGroupIDs = decoded.state?.groupIDs ?? [:]
        self.textBytes = text
    }

    /// Boots the description and restores the state; a state the kernel
    /// logic refuses fails with the path of the step that failed.
    public func boot(profile: KernelProfile? = nil, log: KernelLog = KernelLog()) throws(TopologyError) -> Machine {
        var spec = spec
        spec.groupIDs = restoredGroupIDs
        let machine: Machine
        do {
            machine = try Machine(spec: spec, profile: profile, log: log)
        } catch {
            throw TopologyError(source: source, location: "", reason: error.description)
        }
        guard let state else { return machine }
        do {
            try StateRestorer(machine: machine, spec: spec, state: state).restore()
        } catch {
            throw TopologyError(source: source, location: error.renderedPath, reason: error.reason)
        }
        return machine
    }

    /// This document with `machine`'s current state as its `state` member
    /// (last): loadable again, and booting it gives a machine that dumps
    /// the same document.
    public func dump(_ machine: Machine) -> JSON { text.dump(machine) }

    /// The part of the document `dump` needs once the machine is booted.
    public var text: DocumentText { DocumentText(bytes: textBytes) }

    private static func parse(_ buffer: UnsafeBufferPointer<UInt8>, source: String) throws(TopologyError) -> JSON {
        do {
            return try JSONParser.parse(buffer)
        } catch {
            let (line, column) = error.lineAndColumn(in: buffer)
            throw TopologyError(source: source, location: "line \(line), column \(column)", reason: error.reason)
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

/// A document's text as it was given, for `dump`: what a server keeps of
/// its document after booting. The decoded description is not kept; on a
/// big machine it is tens of megabytes the booted machine already holds.
public struct DocumentText: Sendable {
    let bytes: [UInt8]

    /// The document with `machine`'s current state as its `state` member
    /// (last), in place of the one it came with.
    public func dump(_ machine: Machine) -> JSON {
        // The text parsed when the document was made; it cannot fail now.
        guard case .object(let members)? = try? JSON.parse(bytes) else { preconditionFailure("the document no longer parses") }
        return .object(members.filter { $0.key != RootKey.state.rawValue }
                       + [JSON.Member(RootKey.state.rawValue, StateEncoder.state(of: machine))])
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
