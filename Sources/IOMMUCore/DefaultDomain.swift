import SystemPackage

/// The default-domain machinery of `drivers/iommu/iommu.c`. Every function
/// here runs with the group's mutex held: it is handed the locked state.
extension IOMMUGroup {
    /// `iommu_get_default_domain_type`: the type the members' drivers ask
    /// for (nil = no preference), combined with an explicit `target`
    /// (nil = "auto"). Fails (→ EINVAL) when an untrusted device meets a
    /// driver wish other than DMA, or when `target` contradicts the wish.
    func requiredDomainType(_ s: inout GroupState, target: DomainType?) -> Result<DomainType?, Errno> {
        var driverType: DomainType?
        var untrusted: Device?
        for member in s.devices {
            driverType = combinedWish(driverType, member.device)
            if member.device.untrusted { untrusted = member.device }
        }
        if let untrusted {
            if let wish = driverType, wish != .dma {
                subsystem.log.appendRatelimited(untrusted.logPrefix
                    + "Device is not trusted, but driver is overriding group \(id) to \(wish.logName), refusing to probe.",
                    at: .untrustedOverride)
                return .failure(.invalidArgument)
            }
            driverType = .dma
        }
        guard let target else { return .success(driverType) }
        if let driverType, driverType != target { return .failure(.invalidArgument) }
        return .success(target)
    }

    /// `iommu_get_def_domain_type`: folds one device's wish into the wish so
    /// far; on a conflict IDENTITY wins, else the earlier wish stays.
    private func combinedWish(_ current: DomainType?, _ device: Device) -> DomainType? {
        guard let wish = device.domainWish, wish != current else { return current }
        guard let current else { return wish }
        subsystem.log.appendRatelimited(device.logPrefix
            + "IOMMU driver error, requesting conflicting def_domain_type, \(current.logName) and \(wish.logName), for devices in group \(id).",
            at: .conflictingWishes)
        return wish == .identity ? wish : current
    }

    /// `__iommu_group_alloc_default_domain`: the current default domain if
    /// it already has `type`, else a new one from the first member's unit.
    private func groupDomain(_ s: inout GroupState, _ type: DomainType) -> Result<Domain, Errno> {
        if let current = s.defaultDomain, current.type == type { return .success(current) }
        guard let unit = s.devices.first?.device.unit else { return .failure(.noDevice) }
        return subsystem.allocateDomain(type, on: unit, at: .domainAlloc)
    }

    /// `iommu_group_alloc_default_domain`: an explicit type gets no
    /// fallback; "auto" tries the global default, then DMA with a warning.
    private func allocateDefaultDomain(_ s: inout GroupState, _ required: DomainType?) -> Result<Domain, Errno> {
        if let required { return groupDomain(&s, required) }
        let global = subsystem.defaultDomainType
        let first = groupDomain(&s, global)
        if case .success = first { return first }
        if global == .dma { return .failure(.invalidArgument) }
        let fallback = groupDomain(&s, .dma)
        if case .success = fallback {
            subsystem.log.append("iommu: Failed to allocate default IOMMU domain of type \(global.rawValue) for group \(s.name ?? "(null)") - Falling back to IOMMU_DOMAIN_DMA")
        }
        return fallback
    }

    /// `iommu_setup_default_domain`: picks, allocates and attaches the
    /// default domain of type `target` (nil = auto). On failure the group
    /// is left exactly as it was: every device back on the old domain.
    func setupDefaultDomain(_ s: inout GroupState, target: DomainType?) -> Errno? {
        let required: DomainType?
        switch requiredDomainType(&s, target: target) {
        case .success(let t): required = t
        case .failure(let e): return e
        }
        let domain: Domain
        switch allocateDefaultDomain(&s, required) {
        case .success(let d): domain = d
        case .failure(let e): return e
        }
        if domain === s.defaultDomain { return nil }

        let old = s.defaultDomain
        s.defaultDomain = domain
        // The first attach of a group must not fail (nofail path).
        if let error = setGroupDomain(&s, domain, mustSucceed: s.domain == nil) {
            s.defaultDomain = old
            return error
        }
        return nil
    }

    /// `__iommu_group_set_domain_internal`: attaches every member to `new`.
    /// Unless `mustSucceed`, the first failure moves the devices already
    /// switched back to the group's current domain and is returned.
    ///
    /// While a member is being reset, changes are fenced off (EBUSY); only
    /// must-succeed callers pass, skipping the parked device, which the end
    /// of its reset attaches to the updated domain.
    func setGroupDomain(_ s: inout GroupState, _ new: Domain, mustSucceed: Bool) -> Errno? {
        if s.domain === new { return nil }
        if !mustSucceed && !s.resetDepth.isEmpty { return .resourceBusy }
        var result: Errno?
        for index in s.devices.indices where s.resetDepth[ObjectIdentifier(s.devices[index].device)] == nil {
            guard let error = setDeviceDomain(&s, index, new, mustSucceed: mustSucceed) else { continue }
            result = error
            if mustSucceed { continue }
            if let current = s.domain {
                for revert in 0...index { _ = setDeviceDomain(&s, revert, current, mustSucceed: true) }
            }
            return error
        }
        setCurrentDomain(&s, new)
        subsystem.events.emit(.domainAttached(group: id, type: new.type))
        return result
    }

    /// `__iommu_device_set_domain`: one device's attach. A device whose
    /// firmware requires 1:1 mappings refuses the blocking domain.
    func setDeviceDomain(_ s: inout GroupState, _ index: Int, _ new: Domain, mustSucceed: Bool) -> Errno? {
        let device = s.devices[index].device
        if device.requiresDirectMapping && (new.type == .blocked || new === s.blockingDomain) {
            subsystem.log.append(device.logPrefix + "Firmware has requested this device have a 1:1 IOMMU mapping, rejecting configuring the device without a 1:1 mapping. Contact your platform vendor.")
            return .invalidArgument
        }
        if s.devices[index].attached === new { return nil }
        if s.devices[index].attachDeferred {
            if new === s.defaultDomain { return nil }
            s.devices[index].attachDeferred = false
        }
        if !mustSucceed, let errno = subsystem.faults.fire(.attach) { return errno }
        s.devices[index].attached = new
        return nil
    }

    /// `iommu_setup_dma_ops` for the members (v6.10+, under the mutex): the
    /// first `iommu_dma_init_domain` of a DMA domain downgrades DMA-FQ to DMA
    /// when the unit cannot defer flushes or the flush queue cannot be set
    /// up; the domain is initialised from then on, so later calls return early.
    func setUpDMAOps(_ s: inout GroupState) {
        guard let domain = s.defaultDomain, domain.type.isDMA, !domain.isDMAInitialised,
              let unit = s.devices.first?.device.unit else { return }
        domain.isDMAInitialised = true
        let canDefer = unit.abilities.deferredFlush || !subsystem.profile.checksDeferredFlushCapability
        if domain.type == .dmaFQ && (!canDefer || subsystem.initFlushQueue(domain) != nil) {
            domain.type = .dma
        }
    }

    // MARK: Up to v6.4 (KernelProfile.changesDeviceDefaultDomain, §11)

    /// The up-to-v6.3 checks of `iommu_change_dev_def_domain` for the
    /// group's only device, then the change itself.
    func changeSingletonDefaultDomain(_ s: inout GroupState, _ device: Device, target: DomainType?) -> Errno? {
        guard s.domain === s.defaultDomain else {
            subsystem.log.appendRatelimited(device.logPrefix + "Group not assigned to default domain", at: .changeDefaultNotDefaultDomain)
            return .resourceBusy
        }
        guard s.devices.count == 1 else {
            subsystem.log.appendRatelimited(device.logPrefix + "Cannot change default domain: Group has more than one device", at: .changeDefaultGroupNotSingleton)
            return .invalidArgument
        }
        guard s.devices[0].device === device else {
            subsystem.log.appendRatelimited(device.logPrefix + "Cannot change default domain: Device has been changed", at: .changeDefaultDeviceChanged)
            return .resourceBusy
        }
        return changeDefaultDomain(&s, target: target)
    }

    /// `iommu_change_dev_def_domain` (v6.4 form; v6.1's is the same for its
    /// one device): the members' combined wish decides "auto" and refuses a
    /// contradicting explicit type; the type is reallocated (falling back to
    /// DMA) and the whole group attached. On failure the group keeps its old
    /// default domain.
    func changeDefaultDomain(_ s: inout GroupState, target: DomainType?) -> Errno? {
        guard let old = s.defaultDomain, let first = s.devices.first?.device else { return .invalidArgument }
        let wish = probedWish(&s)
        let type: DomainType
        if let target {
            if let wish, wish != target {
                subsystem.log.appendRatelimited(first.logPrefix + "Device cannot be in \(target.logName) domain", at: .changeDefaultCannotBeIn)
                return .invalidArgument
            }
            type = target
        } else {
            type = wish ?? subsystem.defaultDomainType
        }
        if old.type == type { return nil }
        // Up to v6.3 the flush queue is brought up here; v6.4's store has
        // taken that path before.
        if type == .dmaFQ && old.type == .dma {
            if let error = subsystem.initFlushQueue(old) { return error }
            old.type = .dmaFQ
            return nil
        }
        guard let domain = allocateWithDMAFallback(&s, type) else { return Errno.noMemory }
        s.defaultDomain = domain
        if let error = setGroupDomain(&s, domain, mustSucceed: false) {
            s.defaultDomain = old
            return error
        }
        return nil
    }

    /// `probe_get_default_domain_type` over the members (up to v6.4): the
    /// first wish (DMA if untrusted); a member wishing otherwise is logged
    /// and the group has no wish (the global default applies).
    private func probedWish(_ s: inout GroupState) -> DomainType? {
        var first: Device?
        var type: DomainType?
        for member in s.devices {
            let device = member.device
            guard let wish = device.untrusted ? .dma : device.domainWish else { continue }
            if let current = type, current != wish, let first {
                subsystem.log.append(device.logPrefix + "Device needs domain type \(wish.logName), but device \(first.address) in the same iommu group requires type \(current.logName) - using default")
                type = nil
            }
            if first == nil {
                first = device
                type = wish
            }
        }
        return type
    }

    /// `probe_alloc_default_domain` (up to v6.4): the members' wish or the
    /// global default type; allocation falls back to DMA.
    func setUpProbedDomainWithoutConflicts(_ s: inout GroupState) -> Errno? {
        guard let domain = allocateWithDMAFallback(&s, probedWish(&s) ?? subsystem.defaultDomainType) else { return Errno.noMemory }
        s.defaultDomain = domain
        return setGroupDomain(&s, domain, mustSucceed: true)
    }

    /// `iommu_group_alloc_default_domain` up to v6.4: a new domain of
    /// `type`, else (unless `type` is DMA) a DMA domain with a warning; nil
    /// (→ ENOMEM) when neither can be had.
    private func allocateWithDMAFallback(_ s: inout GroupState, _ type: DomainType) -> Domain? {
        guard let unit = s.devices.first?.device.unit else { return nil }
        if case .success(let domain) = subsystem.allocateDomain(type, on: unit, at: .domainAlloc) { return domain }
        guard type != .dma, case .success(let domain) = subsystem.allocateDomain(.dma, on: unit, at: .domainAlloc) else { return nil }
        subsystem.log.append("iommu: Failed to allocate default IOMMU domain of type \(type.rawValue) for group \(s.name ?? "(null)") - Falling back to IOMMU_DOMAIN_DMA")
        return domain
    }
}
