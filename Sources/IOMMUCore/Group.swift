import SystemPackage

/// An opaque DMA owner token (a VFIO group, an iommufd context...).
public struct DMAOwner: Hashable, Sendable, CustomStringConvertible {
    public let id: String
    public init(_ id: String) { self.id = id }
    public var description: String { id }
}

/// An `iommu_group`: devices that the IOMMU cannot isolate from each other.
///
/// Everything mutable lives in `state`, the port of `group->mutex`.
public final class IOMMUGroup: Sendable {
    /// Decimal id, the directory name under /sys/kernel/iommu_groups.
    public let id: Int
    let subsystem: IOMMUSubsystem
    let state: RankedMutex<GroupState>

    init(id: Int, subsystem: IOMMUSubsystem) {
        self.id = id
        self.subsystem = subsystem
        self.state = RankedMutex(.group, GroupState())
    }

    /// `type` as `iommu_group_show_type` prints it: the default domain's
    /// type, `unknown` without one.
    public var typeText: String {
        state.withLock { ($0.defaultDomain?.type.sysfsName ?? "unknown") + "\n" }
    }

    /// `reserved_regions` as `iommu_group_show_resv_regions` prints it: the
    /// regions of every member merged in device-list order.
    public var reservedRegionsText: String {
        let regions = state.withLock { s in
            var merged: [ReservedRegion] = []
            // The walk stops at the first device without IOMMU ops.
            for member in s.devices {
                guard member.device.unit != nil else { break }
                for region in member.device.reservedRegions { ReservedRegion.insert(region, into: &merged) }
            }
            return merged
        }
        return regions.map(\.sysfsLine).joined()
    }

    /// The member devices in join order (`group->devices`), read under one
    /// hold of the mutex: what a walk over the group's devices iterates.
    public var members: [Device] { state.withLock { $0.devices.map(\.device) } }

    /// `name`, set only by drivers that call `iommu_group_set_name()`.
    public var name: String? { state.withLock { $0.name } }

    /// A consistent copy of the group's state, for tests, dumps and checks.
    public var snapshot: GroupSnapshot {
        state.withLock { s in
            GroupSnapshot(id: id,
                          devices: s.devices.map(\.device.address),
                          defaultDomainType: s.defaultDomain?.type,
                          attachedDomainType: s.domain?.type,
                          isOnDefaultDomain: s.domain != nil && s.domain === s.defaultDomain,
                          attachedPerDevice: s.devices.map { $0.attached?.type },
                          deviceDomainsMatchGroup: s.devices.allSatisfy { $0.attached === s.domain },
                          owner: s.owner,
                          ownerCount: s.ownerCount)
        }
    }
}

/// What `group->mutex` protects.
struct GroupState {
    struct Member {
        let device: Device
        /// The domain the device is attached to now.
        var attached: Domain?
        /// `dev->iommu->attach_deferred`: the default domain is attached at
        /// the first DMA mapping, not at probe.
        var attachDeferred = false
    }

    /// In join order (`group->devices`).
    var devices: [Member] = []
    var defaultDomain: Domain?
    /// The domain the group is attached to (`group->domain`).
    var domain: Domain?
    var blockingDomain: Domain?
    var owner: DMAOwner?
    var ownerCount = 0
    var name: String?
    /// Devices being reset, parked on the blocking domain, with their
    /// nesting depth (v7.1 `gdev->blocked` + `reset_depth`).
    var resetDepth: [ObjectIdentifier: Int] = [:]
}

/// A read-only copy of a group's state.
public struct GroupSnapshot: Sendable, Equatable {
    public var id: Int
    public var devices: [PCIAddress]
    public var defaultDomainType: DomainType?
    public var attachedDomainType: DomainType?
    /// `group->domain == group->default_domain`.
    public var isOnDefaultDomain: Bool
    public var attachedPerDevice: [DomainType?]
    /// Every member is attached to `group->domain`.
    public var deviceDomainsMatchGroup: Bool
    public var owner: DMAOwner?
    public var ownerCount: Int
}
