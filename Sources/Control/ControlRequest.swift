import IOMMUCore
import SystemPackage
import Topology

/// One request of the control protocol: a JSON object on one line whose
/// `verb` says what to do (see the README's "iommufs ctl" section).
public enum ControlRequest: Sendable, Equatable {
    /// Legacy VFIO, one call per step of a user (drivers/vfio/container.c,
    /// group.c): the container's file and its ioctls, the group's file and
    /// its ioctls (`vfioAttach` is SET_CONTAINER, `vfioDetach`
    /// UNSET_CONTAINER), and the release of the group's files.
    case vfioOpenContainer(container: String)
    case vfioCloseContainer(container: String)
    case vfioAPIVersion(container: String)
    case vfioCheckExtension(container: String, VFIOExtension)
    case vfioSetIOMMU(container: String, VFIOExtension)
    case vfioMapDMA(container: String, iova: UInt64, size: UInt64)
    case vfioOpenGroup(group: Int)
    case vfioGroupStatus(group: Int)
    case vfioAttach(container: String, group: Int)
    case vfioDetach(group: Int)
    case vfioGetDeviceFD(group: Int, device: PCIAddress)
    case vfioRelease(group: Int)
    /// iommufd: bind the device to the context (shared group ownership).
    case iommufdBind(context: String, device: PCIAddress)
    case iommufdUnbind(context: String, device: PCIAddress)
    /// The first DMA mapping of the device: its deferred attach.
    case dmaMap(device: PCIAddress)
    case inject(FaultPoint, FaultInjector.Fault)
    case clearFault(FaultPoint)
    /// The faults armed now.
    case listFaults
    /// The kernel log ring; with `clear`, `dmesg -c`: later reads start
    /// after the lines returned.
    case dmesg(clear: Bool)
    /// The machine's description and current state, as a topology document.
    case dump
    /// Streams events; after `count` of them (nil: until the client hangs up)
    /// the server closes the connection.
    case trace(count: Int?)

    /// The verb names on the wire.
    enum Verb: String, CaseIterable {
        case vfioOpenContainer = "vfio-open-container", vfioCloseContainer = "vfio-close-container"
        case vfioAPIVersion = "vfio-api-version", vfioCheckExtension = "vfio-check-extension"
        case vfioSetIOMMU = "vfio-set-iommu", vfioMapDMA = "vfio-map-dma"
        case vfioOpenGroup = "vfio-open-group", vfioGroupStatus = "vfio-group-status"
        case vfioAttach = "vfio-attach", vfioDetach = "vfio-detach"
        case vfioGetDeviceFD = "vfio-get-device-fd", vfioRelease = "vfio-release"
        case iommufdBind = "iommufd-bind", iommufdUnbind = "iommufd-unbind", dmaMap = "dma-map"
        case inject, clearFault = "inject-clear", listFaults = "inject-list", dmesg, dump, trace
    }

    /// The member names on the wire.
    enum Key: String {
        case verb, container, group, context, device, point, errno, stallMs = "stall_ms", times, always, probability, skip, count, clear
        case `extension`, iova, size
    }

    /// The request as one JSON object.
    public var json: JSON {
        let (verb, members): (Verb, [(Key, JSON)]) = switch self {
        case .vfioOpenContainer(let container): (.vfioOpenContainer, [(.container, .string(container))])
        case .vfioCloseContainer(let container): (.vfioCloseContainer, [(.container, .string(container))])
        case .vfioAPIVersion(let container): (.vfioAPIVersion, [(.container, .string(container))])
        case .vfioCheckExtension(let container, let ext):
            (.vfioCheckExtension, [(.container, .string(container)), (.extension, .string(ext.name))])
        case .vfioSetIOMMU(let container, let ext): (.vfioSetIOMMU, [(.container, .string(container)), (.extension, .string(ext.name))])
        case .vfioMapDMA(let container, let iova, let size):
            (.vfioMapDMA, [(.container, .string(container)), (.iova, .integer(Int(iova))), (.size, .integer(Int(size)))])
        case .vfioOpenGroup(let group): (.vfioOpenGroup, [(.group, .integer(group))])
        case .vfioGroupStatus(let group): (.vfioGroupStatus, [(.group, .integer(group))])
        case .vfioAttach(let container, let group): (.vfioAttach, [(.container, .string(container)), (.group, .integer(group))])
        case .vfioDetach(let group): (.vfioDetach, [(.group, .integer(group))])
        case .vfioGetDeviceFD(let group, let device): (.vfioGetDeviceFD, [(.group, .integer(group)), (.device, .string(device.description))])
        case .vfioRelease(let group): (.vfioRelease, [(.group, .integer(group))])
        case .iommufdBind(let context, let device): (.iommufdBind, [(.context, .string(context)), (.device, .string(device.description))])
        case .iommufdUnbind(let context, let device): (.iommufdUnbind, [(.context, .string(context)), (.device, .string(device.description))])
        case .dmaMap(let device): (.dmaMap, [(.device, .string(device.description))])
        case .inject(let point, let fault):
            (.inject, FaultCoding.members(point, fault).map { (Key(rawValue: $0.key)!, $0.value) })
        case .clearFault(let point): (.clearFault, [(.point, .string(point.rawValue))])
        case .listFaults: (.listFaults, [])
        case .dmesg(let clear): (.dmesg, clear ? [(.clear, .bool(true))] : [])
        case .dump: (.dump, [])
        case .trace(let count): (.trace, count.map { [(.count, .integer($0))] } ?? [])
        }
        return .object([JSON.Member(Key.verb.rawValue, .string(verb.rawValue))] + members.map { JSON.Member($0.0.rawValue, $0.1) })
    }

    /// Decodes a request; every member must belong to the verb.
    init(json: JSON) throws(ControlFailure) {
        let fields = try RequestFields(json)
        switch try fields.verb() {
        case .vfioOpenContainer: self = .vfioOpenContainer(container: try fields.string(.container))
        case .vfioCloseContainer: self = .vfioCloseContainer(container: try fields.string(.container))
        case .vfioAPIVersion: self = .vfioAPIVersion(container: try fields.string(.container))
        case .vfioCheckExtension: self = .vfioCheckExtension(container: try fields.string(.container), try fields.vfioExtension())
        case .vfioSetIOMMU: self = .vfioSetIOMMU(container: try fields.string(.container), try fields.vfioExtension())
        case .vfioMapDMA:
            self = .vfioMapDMA(container: try fields.string(.container), iova: UInt64(try fields.count(.iova)),
                               size: UInt64(try fields.count(.size)))
        case .vfioOpenGroup: self = .vfioOpenGroup(group: try fields.count(.group))
        case .vfioGroupStatus: self = .vfioGroupStatus(group: try fields.count(.group))
        case .vfioAttach:
            self = .vfioAttach(container: try fields.string(.container), group: try fields.count(.group))
        case .vfioDetach:
            self = .vfioDetach(group: try fields.count(.group))
        case .vfioGetDeviceFD: self = .vfioGetDeviceFD(group: try fields.count(.group), device: try fields.address(.device))
        case .vfioRelease: self = .vfioRelease(group: try fields.count(.group))
        case .iommufdBind:
            self = .iommufdBind(context: try fields.string(.context), device: try fields.address(.device))
        case .iommufdUnbind:
            self = .iommufdUnbind(context: try fields.string(.context), device: try fields.address(.device))
        case .dmaMap:
            self = .dmaMap(device: try fields.address(.device))
        case .inject:
            let point = try fields.point()
            let effect = try fields.faultEffect()
            let probability = try fields.probability()
            let skip = try fields.optionalCount(.skip) ?? 0
            self = .inject(point, .init(effect, remaining: try fields.times(), probability: probability, skip: skip))
        case .clearFault:
            self = .clearFault(try fields.point())
        case .listFaults: self = .listFaults
        case .dmesg: self = .dmesg(clear: try fields.optionalBool(.clear))
        case .dump: self = .dump
        case .trace: self = .trace(count: try fields.optionalCount(.count))
        }
        try fields.checkNoOthers()
    }
}

/// A request object's members, read by name; what was read is tracked so
/// that a member the verb does not take is an error (a typo must not
/// silently fall back to a default).
private final class RequestFields {
    private let members: [JSON.Member]
    private var used: Set<String> = [ControlRequest.Key.verb.rawValue]

    init(_ json: JSON) throws(ControlFailure) {
        guard case .object(let members) = json else { throw .badRequest("a request is a JSON object") }
        self.members = members
    }

    func verb() throws(ControlFailure) -> ControlRequest.Verb {
        let name = try string(.verb)
        guard let verb = ControlRequest.Verb(rawValue: name) else {
            throw .badRequest("unknown verb \"\(name)\" (known: \(ControlRequest.Verb.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return verb
    }

    func string(_ key: ControlRequest.Key) throws(ControlFailure) -> String {
        guard let text = try value(key).stringValue, !text.isEmpty else { throw .badRequest("\"\(key.rawValue)\" must be a non-empty string") }
        return text
    }

    /// A non-negative integer (a group id, an event count).
    func count(_ key: ControlRequest.Key) throws(ControlFailure) -> Int {
        guard let number = try value(key).intValue, number >= 0 else { throw .badRequest("\"\(key.rawValue)\" must be a non-negative integer") }
        return number
    }

    func optionalCount(_ key: ControlRequest.Key) throws(ControlFailure) -> Int? {
        isAbsentOrNull(key) ? nil : try count(key)
    }

    func address(_ key: ControlRequest.Key) throws(ControlFailure) -> PCIAddress {
        let text = try string(key)
        guard let address = PCIAddress(text.lowercased()) else { throw .badRequest("\"\(text)\" is not a PCI address (dddd:bb:dd.f)") }
        return address
    }

    func point() throws(ControlFailure) -> FaultPoint {
        let name = try string(.point)
        guard let point = FaultPoint(rawValue: name) else {
            throw .badRequest("unknown fault point \"\(name)\" (known: \(FaultPoint.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return point
    }

    func vfioExtension() throws(ControlFailure) -> VFIOExtension {
        let name = try string(.extension)
        guard let ext = VFIOExtension(name: name) else {
            throw .badRequest("unknown VFIO extension \"\(name)\" (known: \(VFIOExtension.allCases.map(\.name).joined(separator: ", ")))")
        }
        return ext
    }

    /// `errno` (a name) or `stall_ms` (milliseconds), exactly one of them.
    func faultEffect() throws(ControlFailure) -> FaultInjector.Effect {
        if isAbsentOrNull(.stallMs) {
            let name = try string(.errno)
            guard let errno = Errno(kernelName: name) else { throw .badRequest("unknown errno name \"\(name)\"") }
            return .fail(errno)
        }
        guard isAbsentOrNull(.errno) else { throw .badRequest("\"errno\" and \"stall_ms\" exclude each other") }
        return .stall(.milliseconds(try count(.stallMs)))
    }

    /// How many failures: `times` (1 when absent), or nil for `"always": true`.
    func times() throws(ControlFailure) -> Int? {
        let always = try optionalBool(.always)
        if isAbsentOrNull(.times) { return always ? nil : 1 }
        guard !always else { throw .badRequest("\"times\" and \"always\" exclude each other") }
        let n = try count(.times)
        guard n > 0 else { throw .badRequest("\"times\" must be at least 1") }
        return n
    }

    /// `true` or `false`; false when absent.
    func optionalBool(_ key: ControlRequest.Key) throws(ControlFailure) -> Bool {
        if isAbsentOrNull(key) { return false }
        guard let flag = try value(key).boolValue else { throw .badRequest("\"\(key.rawValue)\" must be true or false") }
        return flag
    }

    func probability() throws(ControlFailure) -> Double {
        if isAbsentOrNull(.probability) { return 1 }
        guard let p = try value(.probability).doubleValue, (0...1).contains(p) else {
            throw .badRequest("\"probability\" must be a number from 0 to 1")
        }
        return p
    }

    func checkNoOthers() throws(ControlFailure) {
        if let extra = members.first(where: { !used.contains($0.key) }) {
            throw .badRequest("unknown member \"\(extra.key)\" for this verb")
        }
    }

    private func isAbsentOrNull(_ key: ControlRequest.Key) -> Bool {
        used.insert(key.rawValue)
        guard let member = members.first(where: { $0.key == key.rawValue }) else { return true }
        return member.value == .null
    }

    private func value(_ key: ControlRequest.Key) throws(ControlFailure) -> JSON {
        used.insert(key.rawValue)
        guard let member = members.first(where: { $0.key == key.rawValue }) else { throw .badRequest("missing \"\(key.rawValue)\"") }
        return member.value
    }
}
