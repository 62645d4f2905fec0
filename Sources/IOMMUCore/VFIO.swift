import SystemPackage

/// A legacy VFIO container (`vfio_iommu_type1`): groups that share IOVA
/// space, with one unmanaged domain per IOMMU driver among them.
struct VFIOContainer {
    struct SharedDomain {
        let domain: Domain
        let family: IOMMUDriverAbilities.Family
        var groups: Set<Int>
    }

    var domains: [SharedDomain] = []
    /// Group id → index into `domains`.
    var groups: [Int: Int] = [:]
}

/// VFIO and iommufd users of DMA ownership (S14).
extension Machine {
    /// `VFIO_GROUP_SET_CONTAINER` + `VFIO_SET_IOMMU(TYPE1)`: the group is
    /// claimed for its VFIO group (EPERM while a member is bound to a
    /// driver that does not manage DMA; EINVAL with the firmware 1:1 line
    /// for a member with a `direct` region), then attached to the
    /// container's domain for the group's IOMMU driver, or to a new one.
    /// The member devices stay locked meanwhile, so an unbind waits for the
    /// attach instead of racing it.
    public func attachVFIOGroup(_ group: IOMMUGroup, to container: String) -> Errno? {
        vfioContainers.withLock { containers -> Errno? in
            if containers.values.contains(where: { $0.groups[group.id] != nil }) { return .invalidArgument }
            let members = group.snapshot.devices.compactMap { device(at: $0) }
            return withDeviceLocks(members[...]) {
                let owner = DMAOwner("vfio-group-\(group.id)")
                if let error = group.claimDMAOwner(owner) { return error }
                var entry = containers[container] ?? VFIOContainer()
                let family = members.first?.unit?.abilities.family
                if let index = entry.domains.firstIndex(where: { $0.family == family }),
                   group.attachUserDomain(entry.domains[index].domain) == nil {
                    entry.domains[index].groups.insert(group.id)
                    entry.groups[group.id] = index
                } else {
                    guard let unit = members.first?.unit, let family else {
                        group.releaseDMAOwner()
                        return .noDevice
                    }
                    let domain: Domain
                    switch subsystem.allocateDomain(.unmanaged, on: unit, at: .domainAlloc) {
                    case .success(let d): domain = d
                    case .failure(let e):
                        group.releaseDMAOwner()
                        return e
                    }
                    if let error = group.attachUserDomain(domain) {
                        group.releaseDMAOwner()
                        return error
                    }
                    entry.domains.append(.init(domain: domain, family: family, groups: [group.id]))
                    entry.groups[group.id] = entry.domains.count - 1
                }
                containers[container] = entry
                return nil
            }
        }
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: detach from the container's domain and
    /// release ownership (the default domain comes back). ENODEV if the
    /// group is in no container.
    public func detachVFIOGroup(_ group: IOMMUGroup) -> Errno? {
        vfioContainers.withLock { containers -> Errno? in
            guard let name = containers.first(where: { $0.value.groups[group.id] != nil })?.key else { return .noDevice }
            var entry = containers[name]!
            let index = entry.groups.removeValue(forKey: group.id)!
            entry.domains[index].groups.remove(group.id)
            group.releaseDMAOwner()
            if entry.groups.isEmpty {
                containers[name] = nil
            } else {
                containers[name] = entry
            }
            return nil
        }
    }

    /// The container a group is attached to, if any.
    public func vfioContainer(of group: IOMMUGroup) -> String? {
        vfioContainers.withLock { $0.first(where: { $0.value.groups[group.id] != nil })?.key }
    }

    /// Whether two groups translate through the same container domain.
    public func shareVFIODomain(_ a: IOMMUGroup, _ b: IOMMUGroup) -> Bool {
        vfioContainers.withLock { containers in
            containers.values.contains { c in
                guard let i = c.groups[a.id], let j = c.groups[b.id] else { return false }
                return i == j
            }
        }
    }

    /// `iommufd_device_bind`: claims the device's group for the iommufd
    /// context `context` (shared by devices bound to the same context,
    /// EPERM for another one or while a normal driver is bound). A device
    /// is bound once (EINVAL, as a second `VFIO_DEVICE_BIND_IOMMUFD`).
    public func bindIOMMUFD(_ device: Device, context: String) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent, let group = device.group else { return .noDevice }
            if state.iommufdContext != nil { return .invalidArgument }
            if let error = group.claimDMAOwner(DMAOwner("iommufd-" + context), for: device) { return error }
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
    private func withDeviceLocks(_ devices: ArraySlice<Device>, _ body: () -> Errno?) -> Errno? {
        guard let first = devices.first else { return body() }
        return first.lock.withLock { _ in withDeviceLocks(devices.dropFirst(), body) }
    }
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
}
