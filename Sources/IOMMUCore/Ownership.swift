import SystemPackage

/// EPROBE_DEFER: the kernel-internal "try again later" of a driver probe.
public let probeDeferErrno = Errno(rawValue: 517)

/// DMA ownership (S1, S13, S14): kernel drivers share the default domain
/// through `owner_cnt`; a user (VFIO, iommufd) owns the whole group.
extension IOMMUGroup {
    /// `iommu_device_use_default_domain`: a driver without
    /// `driver_managed_dma` is about to probe a member. A group without a
    /// default domain defers the probe (EPROBE_DEFER) where the profile's
    /// kernel does; the driver core maps that before user space sees it.
    public func useDefaultDomain() -> Errno? {
        state.withLock { s in
            if s.defaultDomain == nil && subsystem.profile.defersProbeWithoutDefaultDomain { return probeDeferErrno }
            if s.ownerCount > 0 && (s.owner != nil || s.domain !== s.defaultDomain) { return .resourceBusy }
            s.ownerCount += 1
            return nil
        }
    }

    /// `iommu_device_unuse_default_domain`: that driver unbound.
    public func unuseDefaultDomain() {
        state.withLock { s in
            if s.ownerCount > 0 { s.ownerCount -= 1 }
        }
    }

    /// `iommu_group_claim_dma_owner` (legacy VFIO container): the whole
    /// group for `owner`, on the blocking domain.
    public func claimDMAOwner(_ owner: DMAOwner) -> Errno? {
        state.withLock { s in
            if s.ownerCount != 0 { return .notPermitted }
            return takeDMAOwnership(&s, owner)
        }
    }

    /// `iommu_group_release_dma_owner`.
    public func releaseDMAOwner() {
        state.withLock { releaseDMAOwnership(&$0) }
    }

    /// `iommu_device_claim_dma_owner` (iommufd): shared by claims with the
    /// same owner, refused (EPERM) for any other owner or a kernel driver.
    public func claimDMAOwner(_ owner: DMAOwner, for device: Device) -> Errno? {
        state.withLock { s in
            guard s.devices.contains(where: { $0.device === device }) else { return .noDevice }
            if s.ownerCount != 0 {
                guard s.owner == owner else { return .notPermitted }
                s.ownerCount += 1
                return nil
            }
            return takeDMAOwnership(&s, owner)
        }
    }

    /// `iommu_device_release_dma_owner`: the last release gives the group
    /// back to the default domain.
    public func releaseDMAOwner(for device: Device) {
        state.withLock { s in
            if s.ownerCount > 1 {
                s.ownerCount -= 1
            } else {
                releaseDMAOwnership(&s)
            }
        }
    }

    /// `__iommu_take_dma_ownership`: moves every member to the blocking
    /// domain (a member that needs 1:1 mappings refuses it: EINVAL).
    private func takeDMAOwnership(_ s: inout GroupState, _ owner: DMAOwner) -> Errno? {
        if let domain = s.domain, domain !== s.defaultDomain { return .resourceBusy }
        if s.blockingDomain == nil {
            guard let unit = s.devices.first?.device.unit else { return .noDevice }
            if let errno = subsystem.faults.fire(.blockingDomainAlloc) { return errno }
            // Drivers without IOMMU_DOMAIN_BLOCKED get an empty paging domain.
            let type: DomainType = unit.abilities.canAllocate(.blocked) ? .blocked : .unmanaged
            switch subsystem.allocateDomain(type, on: unit, at: nil) {
            case .success(let d): s.blockingDomain = d
            case .failure(let e): return e
            }
        }
        if let error = setGroupDomain(&s, s.blockingDomain!, mustSucceed: false) { return error }
        s.owner = owner
        s.ownerCount += 1
        subsystem.events.emit(.ownerClaimed(group: id, owner: owner))
        return nil
    }

    /// `__iommu_release_dma_ownership`: back to the default domain, which
    /// must succeed.
    private func releaseDMAOwnership(_ s: inout GroupState) {
        guard s.ownerCount > 0, let owner = s.owner else { return }
        s.ownerCount = 0
        s.owner = nil
        subsystem.events.emit(.ownerReleased(group: id, owner: owner))
        if let domain = s.defaultDomain { _ = setGroupDomain(&s, domain, mustSucceed: true) }
    }
}
