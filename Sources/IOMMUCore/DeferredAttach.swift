import SystemPackage

extension Machine {
    /// The DMA-mapping path's `iommu_deferred_attach` (v7.0+): a device whose
    /// first attach was deferred gets its group's default domain now, under
    /// the group mutex; EBUSY while the device is being reset. A device that
    /// is not deferred returns at once.
    public func mapDMA(_ device: Device) -> Errno? {
        guard let group = device.group else { return .noDevice }
        return group.deferredAttach(device)
    }
}

extension IOMMUGroup {
    func deferredAttach(_ device: Device) -> Errno? {
        state.withLock { s in
            guard let index = s.devices.firstIndex(where: { $0.device === device }) else { return .noDevice }
            guard s.devices[index].attachDeferred else { return nil }
            if s.resetDepth[ObjectIdentifier(device)] != nil { return .resourceBusy }
            guard let domain = s.defaultDomain else { return .noDevice }
            if let errno = subsystem.faults.fire(.deferredAttach) ?? subsystem.faults.fire(.attach) { return errno }
            s.devices[index].attached = domain
            s.devices[index].attachDeferred = false
            return nil
        }
    }

    /// Whether `device` still waits for its deferred first attach.
    public func isAttachDeferred(_ device: Device) -> Bool {
        state.withLock { s in s.devices.first { $0.device === device }?.attachDeferred ?? false }
    }
}
