import Glibc
import IOMMUCore
import Synchronization
import SystemPackage

/// A sysfs attribute: what its `show` prints and what its `store` does with
/// a write, like `struct kobj_attribute`.
///
/// A value stored in its node (no object of its own): the common attributes
/// of the model (a group's `type` and `reserved_regions`, constant identity
/// files) are cases of a small enum and print straight into the reply
/// buffer; anything else is a pair of closures in one shared object.
public struct Attribute: Sendable {
    /// Produces the whole content (at most a page).
    public typealias Show = @Sendable () -> Result<[UInt8], Errno>
    /// Consumes `buffer` (already clamped to a page; the kernel would
    /// NUL-terminate it) and returns the byte count it accepted.
    public typealias Store = @Sendable (_ buffer: UnsafeRawBufferPointer, _ caller: any Credentials) -> Result<Int, Errno>

    /// PAGE_SIZE: sysfs reads produce at most this much and writes are
    /// clamped to it (sysfs files have no atomic_write_len, so no E2BIG).
    public static let pageSize = 4096

    /// Every payload is at most two words, so that a node stays small.
    enum Behaviour: Sendable {
        case custom(Operations)
        /// Read-only text that never changes.
        case constant(String)
        /// `iommu_group_show_type` / `iommu_group_store_type`.
        case groupType(IOMMUGroup)
        /// `iommu_group_show_resv_regions`.
        case groupReservedRegions(ReservedRegionsFile)
        /// A knob of a PCI device directory (`driver_override`, `remove`):
        /// one shared handler per kind, so that a device costs no closures.
        case deviceKnob(DeviceKnob, Device)
        /// A binary attribute (`struct bin_attribute`): sized, read and
        /// written at an offset, never through seq_file.
        case binary(BinaryAttribute)
    }

    /// The closures of a custom attribute.
    final class Operations: Sendable {
        let show: Show?
        let store: Store?

        init(show: Show?, store: Store?) {
            self.show = show
            self.store = store
        }
    }

    let behaviour: Behaviour

    public init(show: Show?, store: Store?) {
        self.behaviour = .custom(Operations(show: show, store: store))
    }

    init(_ behaviour: Behaviour) {
        self.behaviour = behaviour
    }

    public var isReadable: Bool {
        switch behaviour {
        case .custom(let operations): return operations.show != nil
        case .deviceKnob(let knob, _): return knob.isReadable
        case .constant, .groupType, .groupReservedRegions, .binary: return true
        }
    }

    public var isWritable: Bool {
        switch behaviour {
        case .custom(let operations): return operations.store != nil
        case .groupType, .deviceKnob, .binary: return true
        case .constant, .groupReservedRegions: return false
        }
    }

    /// Prints the content into `buffer` (a page) and returns its length.
    func show(into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        switch behaviour {
        case .custom(let operations):
            guard let show = operations.show else { return .failure(.permissionDenied) }
            return show().map { bytes in bytes.withUnsafeBytes { Self.copy($0, into: buffer) } }
        case .constant(let text):
            return .success(Self.copy(text, into: buffer))
        case .groupType(let group):
            return .success(Self.copy(group.typeText, into: buffer))
        case .groupReservedRegions(let file):
            return .success(Self.copy(file.text, into: buffer))
        case .deviceKnob(let knob, let device):
            guard let text = knob.show(device) else { return .failure(.permissionDenied) }
            return .success(Self.copy(text, into: buffer))
        case .binary(let file):
            return .success(file.read(offset: 0, count: buffer.count, privileged: true).withUnsafeBytes { Self.copy($0, into: buffer) })
        }
    }

    /// Runs the store; nil when the attribute has none.
    func store(_ buffer: UnsafeRawBufferPointer, caller: any Credentials) -> Result<Int, Errno>? {
        switch behaviour {
        case .custom(let operations): return operations.store?(buffer, caller)
        case .groupType(let group): return group.storeType(buffer, caller: caller)
        case .deviceKnob(let knob, let device): return knob.store(device, buffer)
        case .binary(let file): return .success(file.write(offset: 0, buffer))
        case .constant, .groupReservedRegions: return nil
        }
    }

    private static func copy(_ bytes: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(bytes.count, buffer.count)
        if n > 0 { buffer.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: n) }
        return n
    }

    /// Copies a String's UTF-8 without allocating (short strings are inline).
    private static func copy(_ text: String, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var text = text
        return text.withUTF8 { copy(UnsafeRawBufferPointer($0), into: buffer) }
    }
}

/// One open file description of an attribute (kernfs' `kernfs_open_file`).
///
/// Reads follow seq_file: the text is generated by a read at offset 0 (or
/// the first read at any offset) and later reads slice it. Writes on the
/// same open file are serialized by `state`, as by kernfs' `of->mutex`.
/// Short texts (every attribute of the model but a few) are kept inline, so
/// that open + read + close allocates nothing but this object.
public final class OpenAttribute: Sendable {
    public let node: Node
    private let attribute: Attribute
    private let state = RankedMutex(.openFile, Text.none)
    /// `file_ns_capable(filp, &init_user_ns, CAP_SYS_ADMIN)` of the opener,
    /// for binary attributes that show the privileged less (`config`).
    private let openerIsAdmin: Bool

    /// The text generated for this open file.
    private enum Text {
        case none
        case inline(InlineText)
        case heap([UInt8])
    }

    private struct InlineText {
        static let capacity = 128
        var length = 0
        var bytes: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    }

    private init(node: Node, attribute: Attribute, openerIsAdmin: Bool) {
        self.node = node
        self.attribute = attribute
        self.openerIsAdmin = openerIsAdmin
    }

    /// kernfs_fop_open: a write-open needs a write bit in the mode and a
    /// store op, a read-open a read bit and a show op, else EACCES, even for
    /// root (sysfs sets KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK).
    /// A binary attribute keeps what `opener` may read (its credentials are
    /// the file's, as `filp->f_cred` is); others never ask, so `opener` is
    /// only called for one (an open is on the read path).
    public static func open(_ node: Node, forReading: Bool, forWriting: Bool,
                            opener: () -> any Credentials = { FullyPrivileged() }) -> Result<OpenAttribute, Errno> {
        guard let attribute = node.attribute else { return .failure(.isDirectory) }
        if node.isRemoved { return .failure(.noDevice) }
        let mode = node.metadataSnapshot.permissions
        if forWriting && (mode & 0o222 == 0 || !attribute.isWritable) { return .failure(.permissionDenied) }
        if forReading && (mode & 0o444 == 0 || !attribute.isReadable) { return .failure(.permissionDenied) }
        var openerIsAdmin = true
        if case .binary = attribute.behaviour { openerIsAdmin = opener().capable(.sysAdmin) }
        return .success(OpenAttribute(node: node, attribute: attribute, openerIsAdmin: openerIsAdmin))
    }

    /// Hands `body` at most `size` bytes of the content from `offset`
    /// (empty at or past the end). `body` runs outside the file's lock.
    public func read<R>(offset: Int, size: Int, _ body: (UnsafeRawBufferPointer) -> R) -> Result<R, Errno> {
        guard attribute.isReadable else { return .failure(.permissionDenied) }
        if case .binary(let file) = attribute.behaviour {
            // kernfs_file_read_iter: at most a page per read, no seq_file.
            if node.isRemoved { return .failure(.noDevice) }
            let bytes = file.read(offset: offset, count: min(max(size, 0), Attribute.pageSize), privileged: openerIsAdmin)
            return .success(bytes.withUnsafeBytes(body))
        }
        do {
            let page = ScratchPage.ofThisThread
            let produced: Result<Int, Errno> = state.withLock { text in
                if node.isRemoved { return .failure(.noDevice) }
                if offset == 0 || { if case .none = text { return true } else { return false } }() {
                    switch attribute.show(into: page) {
                    case .success(let length):
                        text = Self.keep(UnsafeRawBufferPointer(rebasing: page[0..<length]))
                        return .success(length)
                    case .failure(let e):
                        return .failure(e)
                    }
                }
                return .success(Self.copy(text, into: page))
            }
            return produced.map { length in
                let start = min(max(offset, 0), length)
                let end = min(start + max(size, 0), length)
                return body(UnsafeRawBufferPointer(rebasing: page[start..<end]))
            }
        }
    }

    private static func keep(_ bytes: UnsafeRawBufferPointer) -> Text {
        guard bytes.count <= InlineText.capacity else { return .heap(Array(bytes)) }
        var inline = InlineText()
        inline.length = bytes.count
        withUnsafeMutableBytes(of: &inline.bytes) { storage in
            if bytes.count > 0 { storage.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        }
        return .inline(inline)
    }

    private static func copy(_ text: Text, into page: UnsafeMutableRawBufferPointer) -> Int {
        switch text {
        case .none:
            return 0
        case .inline(var inline):
            let n = inline.length
            withUnsafeBytes(of: &inline.bytes) { storage in
                if n > 0 { page.baseAddress!.copyMemory(from: storage.baseAddress!, byteCount: n) }
            }
            return n
        case .heap(let bytes):
            return bytes.withUnsafeBytes { all in
                if !all.isEmpty { page.baseAddress!.copyMemory(from: all.baseAddress!, byteCount: all.count) }
                return all.count
            }
        }
    }

    /// kernfs_fop_write_iter + sysfs_kf_write: the length is clamped to a
    /// page, a zero-length write returns 0 without calling store, and the
    /// file offset is not passed on, but to a binary attribute
    /// (sysfs_kf_bin_write: EFBIG at or past its size, clamped to it).
    public func write(_ bytes: UnsafeRawBufferPointer, caller: any Credentials, offset: Int = 0) -> Result<Int, Errno> {
        guard attribute.isWritable else { return .failure(.permissionDenied) }
        let clamped = UnsafeRawBufferPointer(rebasing: bytes[0..<min(bytes.count, Attribute.pageSize)])
        return state.withLock { _ in
            if node.isRemoved { return .failure(.noDevice) }
            if case .binary(let file) = attribute.behaviour {
                guard offset >= 0, offset < file.size else { return .failure(.fileTooLarge) }
                let count = min(clamped.count, file.size - offset)
                return .success(count == 0 ? 0 : file.write(offset: offset, UnsafeRawBufferPointer(rebasing: clamped[0..<count])))
            }
            if clamped.isEmpty { return .success(0) }
            return attribute.store(clamped, caller: caller) ?? .failure(.permissionDenied)
        }
    }
}

/// A page of scratch memory per thread, for the text of an attribute read:
/// `withUnsafeTemporaryAllocation` of a page goes to the heap, and a read
/// must not allocate. Freed when the thread exits.
enum ScratchPage {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static var ofThisThread: UnsafeMutableRawBufferPointer {
        if let page = pthread_getspecific(key) {
            return UnsafeMutableRawBufferPointer(start: page, count: Attribute.pageSize)
        }
        let page = malloc(Attribute.pageSize)!
        pthread_setspecific(key, page)
        return UnsafeMutableRawBufferPointer(start: page, count: Attribute.pageSize)
    }
}

/// Counts changes of group membership (devices added or removed), the only
/// thing a group's `reserved_regions` text depends on besides the members'
/// fixed regions; and interns the texts, which few groups do not share.
final class MembershipGeneration: Sendable {
    private let counter = Atomic<UInt64>(0)
    private let texts = RankedMutex<Set<String>>(.regionTexts, [])
    private static let internLimit = 1024

    var value: UInt64 { counter.load(ordering: .acquiring) }

    /// Call when a device joined or left a group.
    func advance() { counter.add(1, ordering: .acquiringAndReleasing) }

    func intern(_ text: String) -> String {
        texts.withLock { set in
            if let shared = set.firstIndex(of: text) { return set[shared] }
            if set.count < Self.internLimit { set.insert(text) }
            return text
        }
    }
}

/// A group's `reserved_regions`: the text is made by the model once and
/// kept until the membership generation moves (a reader that raced with the
/// change stores its text under the old generation, so the next reader
/// makes it again).
final class ReservedRegionsFile: Sendable {
    private let group: IOMMUGroup
    private let generation: MembershipGeneration
    private let cached = RankedMutex<(generation: UInt64, text: String)?>(.regionsCache, nil)

    init(group: IOMMUGroup, generation: MembershipGeneration) {
        self.group = group
        self.generation = generation
    }

    var text: String {
        let now = generation.value
        if let hit = cached.withLock({ $0 }), hit.generation == now { return hit.text }
        let text = generation.intern(group.reservedRegionsText)
        cached.withLock { $0 = (now, text) }
        return text
    }
}

/// The shared behaviour of one kind of PCI device knob.
final class DeviceKnob: Sendable {
    enum Kind: Sendable {
        /// `driver_override` (0644): `(null)` when unset.
        case driverOverride
        /// `remove` (0220): a number, non-zero removes the device.
        case remove
    }

    let kind: Kind
    private let machine: Machine

    init(_ kind: Kind, machine: Machine) {
        self.kind = kind
        self.machine = machine
    }

    var isReadable: Bool { kind == .driverOverride }

    func show(_ device: Device) -> String? {
        switch kind {
        case .driverOverride: return (device.driverOverride ?? "(null)") + "\n"
        case .remove: return nil
        }
    }

    func store(_ device: Device, _ buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        switch kind {
        case .driverOverride:
            return machine.setDriverOverride(device, buffer).map { .failure($0) } ?? .success(buffer.count)
        case .remove:
            guard let value = KernelStrings.unsignedLong(buffer) else { return .failure(.invalidArgument) }
            if value != 0 { machine.remove(device) }
            return .success(buffer.count)
        }
    }
}
