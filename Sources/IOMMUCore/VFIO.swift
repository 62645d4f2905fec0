import SystemPackage

/// A `VFIO_CHECK_EXTENSION` argument, also `VFIO_SET_IOMMU`'s
/// (include/uapi/linux/vfio.h).
public enum VFIOExtension: Int, Sendable, CaseIterable {
    case type1 = 1, spaprTCE = 2, type1v2 = 3, spaprTCEv2 = 7, noIOMMU = 8, unmapAll = 9, updateVaddr = 10

    /// The name `iommufs ctl` and the control protocol use.
    public var name: String {
        switch self {
        case .type1: "type1"
        case .spaprTCE: "spapr-tce"
        case .type1v2: "type1v2"
        case .spaprTCEv2: "spapr-tce-v2"
        case .noIOMMU: "noiommu"
        case .unmapAll: "unmap-all"
        case .updateVaddr: "update-vaddr"
        }
    }

    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// `vfio_iommu_type1_check_extension`: the answer of the type1 backend,
    /// the only translating one an x86 machine registers (no sPAPR TCE;
    /// the no-IOMMU backend's answer depends on its mode, see
    /// `Machine.vfioSupports`).
    /// No mdev is in a container, so VFIO_UPDATE_VADDR is offered.
    public var isSupported: Bool {
        switch self {
        case .type1, .type1v2, .unmapAll, .updateVaddr: true
        case .spaprTCE, .spaprTCEv2, .noIOMMU: false
        }
    }

    /// `vfio_iommu_type1_open` accepts only the two type1 models; the other
    /// extensions it supports are features, not backends (EINVAL).
    var opensType1: Bool { self == .type1 || self == .type1v2 }
}

/// What `VFIO_GROUP_GET_STATUS` reports.
public struct VFIOGroupStatus: Equatable, Sendable, CustomStringConvertible {
    /// VFIO_GROUP_FLAGS_VIABLE
    public var viable: Bool
    /// VFIO_GROUP_FLAGS_CONTAINER_SET
    public var containerSet: Bool

    public init(viable: Bool, containerSet: Bool) {
        self.viable = viable
        self.containerSet = containerSet
    }

    /// `viable=1 container_set=0`, as `iommufs ctl vfio status` prints it.
    public var description: String { "viable=\(viable ? 1 : 0) container_set=\(containerSet ? 1 : 0)" }
}

/// VFIO_API_VERSION, what `VFIO_GET_API_VERSION` returns.
public let vfioAPIVersion = 0

/// A legacy VFIO container (`struct vfio_container` with its
/// `vfio_iommu_type1` data): groups that share IOVA space, with one
/// unmanaged domain per IOMMU driver among them.
struct VFIOContainer {
    struct SharedDomain {
        let domain: Domain
        let family: IOMMUDriverAbilities.Family
        var groups: Set<Int>
    }

    /// `container->group_list`, by group id.
    var groups: Set<Int> = []
    /// The backend `VFIO_SET_IOMMU` chose; nil before it, and again once
    /// the last group has left (the container is deprivileged).
    var iommu: VFIOExtension?
    /// `vfio_iommu->domain_list`; empty while `iommu` is nil.
    var domains: [SharedDomain] = []
    /// `vfio_iommu->dma_list`: the mapped IOVA ranges.
    var mappings: [ClosedRange<UInt64>] = []
    /// What `vfio_iommu->iova_list` excludes: the reserved ranges of each
    /// attached group, by group id, taken when it attached, so that a
    /// mapping is checked without looking at any device.
    var reserved: [Int: [ClosedRange<UInt64>]] = [:]
    /// Whether a user holds the container's file (`open-container`). A
    /// container made by `vfio attach` alone lives as long as a group uses it.
    var isOpen: Bool

    func domainIndex(of group: Int) -> Int? { domains.firstIndex { $0.groups.contains(group) } }
}

/// What `vfio` (VFIO's container and group locks) protects.
struct VFIOState {
    /// Containers by the name a user gave them.
    var containers: [String: VFIOContainer] = [:]
    /// Open group files (`group->opened_file`) by group id, each with the
    /// device files opened through it: `device->open_count` per device,
    /// whose sum is `container_users - 1`.
    var openGroups: [Int: [PCIAddress: Int]] = [:]

    func containerName(of group: Int) -> String? { containers.first { $0.value.groups.contains(group) }?.key }
}

/// `vfio_dma_do_map` works in the IOMMU's smallest page (4 KiB on VT-d).
private let vfioPageSize: UInt64 = 4096
/// `dma_entry_limit`, vfio_iommu_type1's module parameter (U16_MAX).
private let vfioDMAEntryLimit = 65535

/// The legacy VFIO user interface (drivers/vfio/container.c, group.c,
/// vfio_iommu_type1.c) and iommufd device binding: users of DMA ownership
/// (S14). Every call takes `vfio` first; a failure leaves the state as it was.
extension Machine {
    // MARK: the container file (/dev/vfio/vfio)

    /// `vfio_fops_open`: a new, empty container. EEXIST if `name` is taken.
    public func openVFIOContainer(_ name: String) -> Errno? {
        vfio.withLock { v in
            if v.containers[name] != nil { return .fileExists }
            v.containers[name] = VFIOContainer(isOpen: true)
            return nil
        }
    }

    /// `vfio_fops_release`: the container lives on while groups use it.
    /// EBADF unless the container's file is open.
    public func closeVFIOContainer(_ name: String) -> Errno? {
        vfio.withLock { v in
            guard v.containers[name]?.isOpen == true else { return .badFileDescriptor }
            v.containers[name]!.isOpen = false
            if v.containers[name]!.groups.isEmpty { v.containers[name] = nil }
            return nil
        }
    }

    /// `VFIO_GET_API_VERSION` on an open container.
    public func vfioAPIVersion(of container: String) -> Result<Int, Errno> {
        vfio.withLock { v in v.containers[container]?.isOpen == true ? .success(IOMMUCore.vfioAPIVersion) : .failure(.badFileDescriptor) }
    }

    /// `vfio_container_ioctl_check_extension`: 1 if the backend (the
    /// container's, or any registered one before `VFIO_SET_IOMMU`) supports
    /// `extension`, else 0. There is one backend, so both ask type1.
    public func vfioCheckExtension(_ extension: VFIOExtension, of container: String) -> Result<Int, Errno> {
        vfio.withLock { v in
            guard v.containers[container]?.isOpen == true else { return .failure(.badFileDescriptor) }
            return .success(vfioSupports(`extension`) ? 1 : 0)
        }
    }

    /// `vfio_ioctl_set_iommu`: EINVAL for a container without groups or
    /// with its backend already set; ENODEV when no backend offers
    /// `extension`; EINVAL from `vfio_iommu_type1_open` for a feature that
    /// is not a backend. Then every group is attached to a domain
    /// (`__vfio_container_attach_groups`); if one fails, those already
    /// attached go back to their blocking domain and the error is returned.
    public func setVFIOIOMMU(_ container: String, _ extension: VFIOExtension) -> Errno? {
        vfio.withLock { v -> Errno? in
            guard var entry = v.containers[container] else { return .badFileDescriptor }
            if entry.groups.isEmpty || entry.iommu != nil { return .invalidArgument }
            guard `extension`.isSupported else { return .noDevice }
            guard `extension`.opensType1 else { return .invalidArgument }
            entry.iommu = `extension`
            var attached: [IOMMUGroup] = []
            for id in entry.groups.sorted() {
                guard let group = self.group(id: id) else { continue }
                let members = group.members
                if let error = withDeviceLocks(members, { attachToContainerDomain(group, members, &entry) }) {
                    for done in attached { done.detachUserDomain() }
                    return error
                }
                attached.append(group)
            }
            v.containers[container] = entry
            return nil
        }
    }

    /// `VFIO_IOMMU_MAP_DMA` (`vfio_dma_do_map`): EINVAL before
    /// `VFIO_SET_IOMMU` (the container passes the ioctl to no backend),
    /// for an empty, unaligned or wrapping range, or one that meets a
    /// reserved region of a group in the container
    /// (`vfio_iommu_iova_dma_valid`; direct-relaxable regions do not
    /// count); EEXIST over an existing mapping; ENOSPC past `dma_entry_limit`.
    public func mapVFIODMA(_ container: String, iova: UInt64, size: UInt64) -> Errno? {
        vfio.withLock { v -> Errno? in
            guard let entry = v.containers[container] else { return .badFileDescriptor }
            guard entry.iommu != nil else { return .invalidArgument }
            if size == 0 || (size | iova) & (vfioPageSize - 1) != 0 { return .invalidArgument }
            let (last, wrapped) = iova.addingReportingOverflow(size - 1)
            if wrapped { return .invalidArgument }
            let range = iova...last
            if entry.mappings.contains(where: { $0.overlaps(range) }) { return .fileExists }
            if entry.mappings.count >= vfioDMAEntryLimit { return .noSpace }
            // vfio_iommu_iova_dma_valid: against the ranges the groups
            // brought at attach.
            if entry.reserved.values.contains(where: { $0.contains { range.overlaps($0) } }) { return .invalidArgument }
            v.containers[container]!.mappings.append(range)
            return nil
        }
    }

    // MARK: the group file (/dev/vfio/N)

    /// `vfio_group_fops_open`: `/dev/vfio/N` exists while a member is bound
    /// to a VFIO driver (ENOENT otherwise); one file per group (EBUSY).
    public func openVFIOGroup(_ group: IOMMUGroup) -> Errno? {
        vfio.withLock { v in
            guard vfioDevices(of: group).first != nil else { return .noSuchFileOrDirectory }
            if v.openGroups[group.id] != nil { return .resourceBusy }
            v.openGroups[group.id] = [:]
            return nil
        }
    }

    /// `vfio_group_ioctl_get_status` (6.12 and 6.1 alike): a group with a
    /// container is viable; otherwise viable while nothing claims its DMA
    /// (`iommu_group_dma_owner_claimed`: no member bound to a driver that
    /// uses the DMA API, no user). EBADF unless the group's file is open.
    public func vfioGroupStatus(_ group: IOMMUGroup) -> Result<VFIOGroupStatus, Errno> {
        vfio.withLock { v in
            guard v.openGroups[group.id] != nil else { return .failure(.badFileDescriptor) }
            if v.containerName(of: group.id) != nil { return .success(.init(viable: true, containerSet: true)) }
            return .success(.init(viable: group.snapshot.ownerCount == 0, containerSet: false))
        }
    }

    /// `VFIO_GROUP_SET_CONTAINER` (`vfio_group_ioctl_set_container`,
    /// `vfio_container_attach_group`): EINVAL if the group already has a
    /// container; the group is claimed for its VFIO group (EPERM while a
    /// member is bound to a driver that uses the DMA API; EINVAL with the
    /// firmware 1:1 line for a member with a `direct` region); if the
    /// container's backend is set, the group joins the container's domain
    /// for its IOMMU driver, or a new one. The members stay locked
    /// meanwhile, so an unbind waits for the attach instead of racing it.
    ///
    /// A container nobody opened is made here, and its backend set to
    /// type1v2 at once: `vfio attach` alone stands for a whole VFIO user,
    /// and a restored `vfio_containers` entry is such a container.
    public func attachVFIOGroup(_ group: IOMMUGroup, to container: String) -> Errno? {
        vfio.withLock { v -> Errno? in
            if v.containerName(of: group.id) != nil { return .invalidArgument }
            var entry = v.containers[container] ?? VFIOContainer(iommu: .type1v2, isOpen: false)
            let members = group.members
            let error = withDeviceLocks(members) { () -> Errno? in
                if let error = group.claimDMAOwner(DMAOwner("vfio-group-\(group.id)")) { return error }
                guard entry.iommu != nil else { return nil }
                if let error = attachToContainerDomain(group, members, &entry) {
                    group.releaseDMAOwner()
                    return error
                }
                return nil
            }
            if let error { return error }
            entry.groups.insert(group.id)
            v.containers[container] = entry
            return nil
        }
    }

    /// `VFIO_GROUP_UNSET_CONTAINER` (`vfio_group_ioctl_unset_container`):
    /// EINVAL if the group has no container, EBUSY while a device file of
    /// the group is open; else `vfio_group_detach_container`.
    public func detachVFIOGroup(_ group: IOMMUGroup) -> Errno? {
        vfio.withLock { v -> Errno? in
            guard v.containerName(of: group.id) != nil else { return .invalidArgument }
            if v.openGroups[group.id]?.isEmpty == false { return .resourceBusy }
            detachContainer(of: group, &v)
            return nil
        }
    }

    /// `VFIO_GROUP_GET_DEVICE_FD`: ENODEV unless `address` names a member
    /// bound to a VFIO driver (`vfio_device_get_from_name` looks only at
    /// the group's VFIO devices); EINVAL without a container or before
    /// `VFIO_SET_IOMMU` (`vfio_df_group_open`, `vfio_group_use_container`).
    /// A device may be opened more than once through its group.
    public func openVFIODevice(_ address: PCIAddress, in group: IOMMUGroup) -> Errno? {
        vfio.withLock { v -> Errno? in
            guard v.openGroups[group.id] != nil else { return .badFileDescriptor }
            guard vfioDevices(of: group).contains(where: { $0.address == address }) else { return .noDevice }
            guard let name = v.containerName(of: group.id), v.containers[name]?.iommu != nil else { return .invalidArgument }
            v.openGroups[group.id]![address, default: 0] += 1
            return nil
        }
    }

    /// Closing the group's file and every device file opened through it,
    /// as a VFIO user's exit does (`vfio_device_fops_release`, then
    /// `vfio_group_fops_release`, which detaches the container). EBADF
    /// unless the group's file is open.
    public func releaseVFIOGroup(_ group: IOMMUGroup) -> Errno? {
        vfio.withLock { v -> Errno? in
            guard v.openGroups.removeValue(forKey: group.id) != nil else { return .badFileDescriptor }
            if v.containerName(of: group.id) != nil { detachContainer(of: group, &v) }
            return nil
        }
    }

    /// The container whose IOMMU a group translates through, if any (a
    /// group set to a container before `VFIO_SET_IOMMU` has none yet).
    public func vfioContainer(of group: IOMMUGroup) -> String? {
        vfio.withLock { v in
            v.containerName(of: group.id).flatMap { v.containers[$0]?.iommu != nil ? $0 : nil }
        }
    }

    /// Whether two groups translate through the same container domain.
    public func shareVFIODomain(_ a: IOMMUGroup, _ b: IOMMUGroup) -> Bool {
        vfio.withLock { v in
            v.containers.values.contains { c in
                guard let i = c.domainIndex(of: a.id) else { return false }
                return i == c.domainIndex(of: b.id)
            }
        }
    }

    // MARK: helpers (`vfio` held)

    /// `vfio_iommu_type1_attach_group`: EINVAL if a mapping meets one of
    /// the group's reserved regions (`vfio_iommu_resv_conflict`); then the
    /// container's domain for the group's IOMMU driver, if it takes the
    /// group, else a new domain.
    private func attachToContainerDomain(_ group: IOMMUGroup, _ members: [Device], _ entry: inout VFIOContainer) -> Errno? {
        vfio.assertHeld()
        let reserved = blockingRegions(members)
        if entry.mappings.contains(where: { m in reserved.contains { m.overlaps($0) } }) { return .invalidArgument }
        let family = members.first?.unit?.abilities.family
        if let index = entry.domains.firstIndex(where: { $0.family == family }),
           group.attachUserDomain(entry.domains[index].domain) == nil {
            entry.domains[index].groups.insert(group.id)
            entry.reserved[group.id] = reserved
            return nil
        }
        guard let unit = members.first?.unit, let family else { return .noDevice }
        let domain: Domain
        switch subsystem.allocateDomain(.unmanaged, on: unit, at: .domainAlloc) {
        case .success(let d): domain = d
        case .failure(let e): return e
        }
        if let error = group.attachUserDomain(domain) { return error }
        entry.domains.append(.init(domain: domain, family: family, groups: [group.id]))
        entry.reserved[group.id] = reserved
        return nil
    }

    /// `vfio_group_detach_container`: the backend lets the group go (a
    /// domain left without groups is freed), ownership is released (the
    /// default domain comes back), and the last group deprivileges the
    /// container: no backend, no mappings. A container nobody holds open
    /// goes away with it.
    private func detachContainer(of group: IOMMUGroup, _ v: inout VFIOState) {
        guard let name = v.containerName(of: group.id), var entry = v.containers[name] else { return }
        if let index = entry.domainIndex(of: group.id) {
            entry.domains[index].groups.remove(group.id)
            if entry.domains[index].groups.isEmpty { entry.domains.remove(at: index) }
        }
        group.releaseDMAOwner()
        entry.groups.remove(group.id)
        entry.reserved[group.id] = nil
        if entry.groups.isEmpty {
            entry.iommu = nil
            entry.domains = []
            entry.mappings = []
        }
        v.containers[name] = entry.groups.isEmpty && !entry.isOpen ? nil : entry
    }

    /// The members of `group` bound to a VFIO driver: its `vfio_device`s
    /// (`group->device_list`), read under one hold of the group's mutex.
    private func vfioDevices(of group: IOMMUGroup) -> [Device] {
        group.members.filter { $0.driver?.registersVFIODevice == true }
    }

    /// The IOVA ranges a mapping must avoid for these devices: their
    /// reserved regions but the direct-relaxable ones (`vfio_iommu_resv_exclude`).
    private func blockingRegions(_ members: [Device]) -> [ClosedRange<UInt64>] {
        members.flatMap(\.reservedRegions).filter { $0.kind != .directRelaxable }.map { $0.start...$0.end }
    }

    // MARK: iommufd

    /// `iommufd_device_bind`: claims the device's group for the iommufd
    /// context `context` (shared by devices bound to the same context,
    /// EPERM for another one or while a normal driver is bound). A device
    /// is bound once (EINVAL, as a second `VFIO_DEVICE_BIND_IOMMUFD`).
    public func bindIOMMUFD(_ device: Device, context: String) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent, let group = device.group else { return .noDevice }
            if state.iommufdContext != nil { return .invalidArgument }
            if let error = group.claimDMAOwner(.iommufd(context), for: device) { return error }
            state.iommufdContext = context
            return nil
        }
    }

    /// `iommufd_device_unbind`: the last device of a context gives the
    /// group back to its default domain. EINVAL unless the device is bound
    /// to `context`.
    public func unbindIOMMUFD(_ device: Device, context: String) -> Errno? {
        device.lock.withLock { state in
            guard state.iommufdContext == context, let group = device.group else { return .invalidArgument }
            group.releaseDMAOwner(for: device)
            state.iommufdContext = nil
            return nil
        }
    }

    /// Runs `body` with every device of `devices` locked, in address order
    /// (the order a VFIO attach takes the group's device locks in).
    private func withDeviceLocks(_ devices: [Device], _ body: () -> Errno?) -> Errno? {
        func lock(_ devices: ArraySlice<Device>) -> Errno? {
            guard let first = devices.first else { return body() }
            return first.lock.withLock { _ in lock(devices.dropFirst()) }
        }
        return lock(devices.sorted { $0.address < $1.address }[...])
    }
}

extension DMAOwner {
    /// The owner of the groups whose devices are bound to iommufd context `context`.
    static func iommufd(_ context: String) -> DMAOwner { DMAOwner("iommufd-" + context) }
}

extension PCIDriver {
    /// Whether binding registers a `vfio_device` (vfio-pci's probe calls
    /// `vfio_pci_core_register_device`), which makes `/dev/vfio/N`.
    var registersVFIODevice: Bool { name == "vfio-pci" }
}

extension IOMMUGroup {
    /// `__iommu_attach_group`: a user's domain may replace only the default
    /// or the blocking domain (else EBUSY); fenced during resets.
    func attachUserDomain(_ domain: Domain) -> Errno? {
        state.withLock { s in
            if let current = s.domain, current !== s.defaultDomain, current !== s.blockingDomain { return .resourceBusy }
            return setGroupDomain(&s, domain, mustSucceed: false)
        }
    }

    /// `iommu_detach_group` of an owned group: back to its blocking domain.
    func detachUserDomain() {
        state.withLock { s in
            if let blocking = s.blockingDomain { _ = setGroupDomain(&s, blocking, mustSucceed: true) }
        }
    }
}
