import Glibc
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
    /// The file the text was read from, when it was: `text` names it
    /// instead of holding a copy.
    private var file: DocumentText.File?

    /// Reads and decodes the document at `path`; errors name the path as given.
    public static func load(contentsOf path: String) throws(TopologyError) -> TopologyDocument {
        let bytes: [UInt8]
        do {
            bytes = try contents(of: path)
        } catch {
            throw TopologyError(source: path, location: "", reason: "cannot read the file: \(error)")
        }
        var document = try TopologyDocument(bytes, source: path)
        document.file = DocumentText.File(path: absolutePath(path), contents: bytes)
        return document
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
    public func dump(_ machine: Machine) -> JSON {
        // The text in memory: nothing to read again, nothing to fail.
        try! DocumentText(bytes: textBytes).dump(machine)
    }

    /// The part of the document `dump` needs once the machine is booted.
    public var text: DocumentText { file.map(DocumentText.init(file:)) ?? DocumentText(bytes: textBytes) }

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
    static func contents(of path: String) throws -> [UInt8] {
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

    /// `path` from the working directory now: a daemon changes its own.
    private static func absolutePath(_ path: String) -> String {
        guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        return String(cString: cwd) + "/" + path
    }
}

/// A document's text as it was given, for `dump`: what a server keeps of
/// its document after booting. The decoded description is not kept; on a
/// big machine it is tens of megabytes the booted machine already holds.
///
/// A document read from a file is not copied: a dump reads the file again
/// and checks that it still holds the text the machine booted from.
public struct DocumentText: Sendable {
    /// A file and a digest of the text it held.
    struct File: Sendable {
        let path: String
        let length: Int
        let digest: Int

        init(path: String, contents: [UInt8]) {
            self.path = path
            self.length = contents.count
            self.digest = Self.digest(contents)
        }

        /// Within one process (the dump runs in the daemon that loaded the
        /// file), equal texts give equal digests.
        static func digest(_ bytes: [UInt8]) -> Int {
            var hasher = Hasher()
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
            return hasher.finalize()
        }
    }

    private enum Origin: Sendable {
        case bytes([UInt8])
        case file(File)
    }

    private let origin: Origin

    init(bytes: [UInt8]) { origin = .bytes(bytes) }
    init(file: File) { origin = .file(file) }

    /// The document with `machine`'s current state as its `state` member
    /// (last), in place of the one it came with. Fails when the file the
    /// document came from changed or went away since it was loaded.
    public func dump(_ machine: Machine) throws(TopologyError) -> JSON {
        let bytes: [UInt8]
        switch origin {
        case .bytes(let text):
            bytes = text
        case .file(let file):
            let current: [UInt8]
            do {
                current = try TopologyDocument.contents(of: file.path)
            } catch {
                throw TopologyError(source: file.path, location: "", reason: "cannot read the file the machine booted from: \(error)")
            }
            guard current.count == file.length, File.digest(current) == file.digest else {
                throw TopologyError(source: file.path, location: "",
                                    reason: "the file changed since the machine booted from it; a dump needs the description it booted")
            }
            bytes = current
        }
        // The text parsed when the document was made; it cannot fail now.
        guard case .object(let members)? = try? JSON.parse(bytes) else { preconditionFailure("the document no longer parses") }
        // The profile the machine runs (perhaps a --profile over the
        // document's): the state is what that kernel's logic reached.
        let replaced: Set<String> = [RootKey.profile.rawValue, RootKey.state.rawValue]
        return .object(members.filter { !replaced.contains($0.key) }
                       + [JSON.Member(RootKey.profile.rawValue, .string(machine.subsystem.profile.name)),
                          JSON.Member(RootKey.state.rawValue, StateEncoder.state(of: machine))])
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
