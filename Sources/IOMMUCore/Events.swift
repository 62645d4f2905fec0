/// Something the core did that a test may want to wait for (`ctl trace`).
public enum MachineEvent: Sendable, Equatable, CustomStringConvertible {
    case deviceAdded(PCIAddress, group: Int)
    case deviceRemoved(PCIAddress, group: Int)
    case groupCreated(Int)
    case groupReleased(Int)
    /// The group now translates through a domain of this type.
    case domainAttached(group: Int, type: DomainType)
    case typeChanged(group: Int, from: DomainType, to: DomainType)
    case ownerClaimed(group: Int, owner: DMAOwner)
    case ownerReleased(group: Int, owner: DMAOwner)
    case driverBound(PCIAddress, driver: String)
    case driverUnbound(PCIAddress, driver: String)

    /// One line, `kind key=value ...`, as `ctl trace` prints it.
    public var description: String {
        switch self {
        case .deviceAdded(let a, let g): "device-added dev=\(a) group=\(g)"
        case .deviceRemoved(let a, let g): "device-removed dev=\(a) group=\(g)"
        case .groupCreated(let g): "group-created group=\(g)"
        case .groupReleased(let g): "group-released group=\(g)"
        case .domainAttached(let g, let t): "domain-attached group=\(g) type=\(t.sysfsName)"
        case .typeChanged(let g, let from, let to): "type-changed group=\(g) from=\(from.sysfsName) to=\(to.sysfsName)"
        case .ownerClaimed(let g, let o): "owner-claimed group=\(g) owner=\(o)"
        case .ownerReleased(let g, let o): "owner-released group=\(g) owner=\(o)"
        case .driverBound(let a, let d): "driver-bound dev=\(a) driver=\(d)"
        case .driverUnbound(let a, let d): "driver-unbound dev=\(a) driver=\(d)"
        }
    }
}

/// Hands events to whoever listens. Subscribers are called on the thread
/// that caused the event, possibly with a group's mutex held: they must
/// only record the event, never call back into the model.
public final class EventBus: Sendable {
    public typealias Subscriber = @Sendable (MachineEvent) -> Void

    private struct Subscribers {
        var next = 0
        var byToken: [Int: Subscriber] = [:]
    }

    private let subscribers = RankedMutex(.eventSubscribers, Subscribers())

    public init() {}

    /// Starts delivering events to `subscriber`; returns a token for `unsubscribe`.
    public func subscribe(_ subscriber: @escaping Subscriber) -> Int {
        subscribers.withLock { s in
            s.next += 1
            s.byToken[s.next] = subscriber
            return s.next
        }
    }

    public func unsubscribe(_ token: Int) {
        _ = subscribers.withLock { $0.byToken.removeValue(forKey: token) }
    }

    func emit(_ event: MachineEvent) {
        let listeners = subscribers.withLock { $0.byToken.isEmpty ? [] : Array($0.byToken.values) }
        for listener in listeners { listener(event) }
    }
}
