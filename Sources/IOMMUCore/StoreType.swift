import SystemPackage

extension IOMMUGroup {
    /// `iommu_group_store_type`: a write to the group's `type` file.
    ///
    /// `buffer` is what kernfs hands the store: at most a page, never empty
    /// (kernfs returns 0 for an empty write before calling a store). The
    /// checks run in the kernel's order, and every failure leaves the group
    /// exactly as it was.
    ///
    /// - Returns: the whole byte count on success.
    public func storeType(_ buffer: UnsafeRawBufferPointer, caller: any Credentials) -> Result<Int, Errno> {
        guard caller.capable(.sysAdmin), caller.capable(.sysRawio) else { return .failure(.permissionDenied) }
        // Read without the mutex, as the kernel does: only a hint, rechecked below.
        guard state.withLock({ $0.defaultDomain != nil }) else { return .failure(.invalidArgument) }

        let target: DomainType?
        if sysfsStreq(buffer, "identity") { target = .identity }
        else if sysfsStreq(buffer, "DMA") { target = .dma }
        else if sysfsStreq(buffer, "DMA-FQ") { target = .dmaFQ }
        else if sysfsStreq(buffer, "auto") { target = nil }
        else { return .failure(.invalidArgument) }

        if subsystem.profile.singletonTypeStore { return storeTypeOfSingleton(target, count: buffer.count) }
        let stored = state.withLock { s -> Result<Bool, Errno> in
            // A flush queue can be brought up without tearing the domain
            // down: no ownership, emptiness or device check on this path.
            if target == .dmaFQ, let domain = s.defaultDomain, domain.type == .dma {
                if let error = subsystem.initFlushQueue(domain) { return .failure(error) }
                domain.type = .dmaFQ
                subsystem.events.emit(.typeChanged(group: id, from: .dma, to: .dmaFQ))
                return .success(false)
            }
            // Otherwise no driver may be using the group's DMA API.
            if s.devices.isEmpty || s.ownerCount != 0 { return .failure(.notPermitted) }
            let error = reportingTypeChange(&s) { s in
                subsystem.profile.changesDeviceDefaultDomain
                    ? changeDefaultDomain(&s, target: target) : setupDefaultDomain(&s, target: target)
            }
            return error.map { .failure($0) } ?? .success(true)
        }
        return stored.map { changed in
            if changed { finishDMAOps() }
            return buffer.count
        }
    }

    /// The DMA-ops setup after a store changed the default domain: v6.10+
    /// under the same hold of the mutex; before, `probe_finalize` after
    /// dropping it (the kernel then runs it unlocked; the model takes the
    /// mutex again, the domain's fields need it).
    private func finishDMAOps() {
        guard !subsystem.profile.setsUpDMAOpsUnderMutex else { return }
        state.withLock { s in
            _ = reportingTypeChange(&s) { s in
                setUpDMAOps(&s)
                return nil
            }
        }
    }

    /// Runs `change` on the locked state and reports a change of the
    /// default domain's type. v6.10+ set the DMA ops up inside it.
    private func reportingTypeChange(_ s: inout GroupState, _ change: (inout GroupState) -> Errno?) -> Errno? {
        let before = s.defaultDomain?.type
        if let error = change(&s) { return error }
        if subsystem.profile.setsUpDMAOpsUnderMutex { setUpDMAOps(&s) }
        if let before, let after = s.defaultDomain?.type, before != after {
            subsystem.events.emit(.typeChanged(group: id, from: before, to: after))
        }
        return nil
    }
}

extension IOMMUGroup {
    /// Up to v6.3, after the token: the group must hold exactly one device,
    /// whose lock is taken; a bound driver (any, VFIO's and pcieport too)
    /// refuses every change but the live DMA→DMA-FQ upgrade. The rest runs
    /// under the group's mutex (`iommu_change_dev_def_domain`).
    private func storeTypeOfSingleton(_ target: DomainType?, count: Int) -> Result<Int, Errno> {
        let device = state.withLock { s in s.devices.count == 1 ? s.devices[0].device : nil }
        guard let device else {
            subsystem.log.appendRatelimited("iommu: Cannot change default domain: Group has more than one device", at: .storeTypeGroupNotSingleton)
            return .failure(.invalidArgument)
        }
        return device.lock.withLock { _ -> Result<Int, Errno> in
            let liveUpgrade = target == .dmaFQ && state.withLock { $0.defaultDomain?.type == .dma }
            if device.driver != nil && !liveUpgrade {
                subsystem.log.appendRatelimited("iommu: Device is still bound to driver", at: .storeTypeDeviceBound)
                return .failure(.resourceBusy)
            }
            let error = state.withLock { s in
                reportingTypeChange(&s) { s in changeSingletonDefaultDomain(&s, device, target: target) }
            }
            if let error { return .failure(error) }
            finishDMAOps()
            return .success(count)
        }
    }
}

/// `sysfs_streq`: equal up to the first NUL of `buffer` (or its end), where
/// the input may carry one trailing newline.
func sysfsStreq(_ buffer: UnsafeRawBufferPointer, _ token: StaticString) -> Bool {
    var length = buffer.firstIndex(of: 0) ?? buffer.count
    if length > 0 && buffer[length - 1] == UInt8(ascii: "\n") { length -= 1 }
    guard length == token.utf8CodeUnitCount else { return false }
    return token.withUTF8Buffer { expected in
        (0..<length).allSatisfy { buffer[$0] == expected[$0] }
    }
}
