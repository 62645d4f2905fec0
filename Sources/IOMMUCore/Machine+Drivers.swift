import SystemPackage

/// The PCI driver core's side of DMA ownership: binding and unbinding run
/// `pci_dma_configure` / `pci_dma_cleanup`, and the sysfs knobs `bind`,
/// `unbind`, `drivers_probe` and `driver_override` follow
/// `drivers/base/bus.c` and `drivers/pci/pci-sysfs.c`.
extension Machine {
    /// The registered driver called `name`.
    public func driver(named name: String) -> PCIDriver? { drivers[name] }

    /// Binds `driver` to `device` as `really_probe` does: a driver that does
    /// not manage DMA itself takes a reference on the group's default domain
    /// (`iommu_device_use_default_domain`) and fails to probe, EBUSY, while
    /// a user owns the group. EBUSY as well if a driver is already bound.
    public func bind(_ device: Device, to driver: PCIDriver) -> Errno? {
        device.lock.withLock { _ in bindLocked(device, driver)?.errno }
    }

    /// Releases the device's driver (`device_release_driver`): the group
    /// reference goes back (`pci_dma_cleanup`). ENODEV if none is bound.
    public func unbind(_ device: Device) -> Errno? {
        device.lock.withLock { state in unbindLocked(device, state) }
    }

    /// `bind_store`: `driver` must match the device (its id table, or the
    /// device's `driver_override` naming it), else ENODEV; then
    /// `device_driver_attach`, which hands a deferred probe (EPROBE_DEFER,
    /// e.g. a group without a default domain yet) to the writer as EAGAIN.
    public func attach(_ driver: PCIDriver, to device: Device) -> Errno? {
        let error = device.lock.withLock { state -> Errno? in
            guard state.isPresent, matches(driver, device, override: state.driverOverride) else { return .noDevice }
            return bindLocked(device, driver)?.errno
        }
        return error == probeDeferErrno ? .resourceTemporarilyUnavailable : error
    }

    /// `unbind_store`: ENODEV unless `driver` is the one bound.
    public func detach(_ driver: PCIDriver, from device: Device) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent, device.driver == driver else { return .noDevice }
            return unbindLocked(device, state)
        }
    }

    /// `drivers_probe_store`: an unbound device gets the first driver that
    /// matches (`bus_rescan_devices_helper` → `device_attach`); no match is
    /// not an error. A probe that fails before the driver's own probe runs
    /// (`pci_dma_configure`: EBUSY while a user owns the group, EPROBE_DEFER
    /// while the group has no default domain) makes the helper fail, and
    /// the store answers EINVAL whatever the reason; a failing driver probe
    /// only leaves the device unbound (`__device_attach_driver` goes on to
    /// the next driver).
    public func probe(_ device: Device) -> Errno? {
        let failure = device.lock.withLock { state -> ProbeFailure? in
            guard state.isPresent, device.driver == nil,
                  let driver = matchingDriver(device, override: state.driverOverride) else { return nil }
            return bindLocked(device, driver)
        }
        guard case .beforeProbe? = failure else { return nil }
        return .invalidArgument
    }

    /// `driver_override` store (`driver_set_override`): `buffer` up to its
    /// first NUL and first newline; empty (or a lone newline) clears it;
    /// 4095 bytes or more → EINVAL.
    public func setDriverOverride(_ device: Device, _ buffer: UnsafeRawBufferPointer) -> Errno? {
        // sysfs_emit on show adds a newline within a page, so one byte less is kept.
        guard buffer.count < 4095 else { return .invalidArgument }
        let text = buffer.prefix { $0 != 0 }
        let name = text.prefix { $0 != UInt8(ascii: "\n") }
        let cleared = text.isEmpty || name.isEmpty
        device.lock.withLock { $0.driverOverride = cleared ? nil : String(decoding: name, as: UTF8.self) }
        return nil
    }

    /// `pci_match_device`: an override names the only driver that may bind;
    /// otherwise the id table matches (the device's native driver).
    func matches(_ driver: PCIDriver, _ device: Device, override: String?) -> Bool {
        if let override { return override == driver.name }
        return dynamicIDMatches(driver, device) || driver.name == device.nativeDriverName
    }

    /// The first driver that matches (by name order; the native driver when
    /// nothing else claims the device).
    private func matchingDriver(_ device: Device, override: String?) -> PCIDriver? {
        if let override { return drivers[override] }
        if let dynamic = drivers.values.sorted(by: { $0.name < $1.name }).first(where: { dynamicIDMatches($0, device) }) {
            return dynamic
        }
        return device.nativeDriverName.flatMap { drivers[$0] }
    }

    /// How `really_probe` failed. Its errnos are the kernel's own,
    /// EPROBE_DEFER included: each caller maps them as its kernel
    /// counterpart does before anything reaches user space.
    enum ProbeFailure: Equatable {
        /// Before the driver's probe ran (a driver is bound already: EBUSY;
        /// `pci_dma_configure`), returned negative.
        case beforeProbe(Errno)
        /// In the driver's probe (`call_driver_probe`), returned positive
        /// "so that the callers can distinguish them".
        case inProbe(Errno)

        var errno: Errno {
            switch self {
            case .beforeProbe(let errno), .inProbe(let errno): errno
            }
        }
    }

    /// `really_probe` with the device lock held: `pci_dma_configure`, then
    /// the driver's probe (the `probe` fault point; vfio-pci's finds or
    /// makes the device's VFIO group), whose failure gives
    /// the group reference back (`pci_dma_cleanup`) and is logged unless it
    /// is a deferral or a "no match" (ENODEV, ENXIO).
    func bindLocked(_ device: Device, _ driver: PCIDriver) -> ProbeFailure? {
        device.lock.assertHeld()
        if device.driver != nil { return .beforeProbe(.resourceBusy) }
        if !driver.managesDMA, let group = device.group, let error = group.useDefaultDomain() { return .beforeProbe(error) }
        if let errno = subsystem.faults.fire(.probe) ?? (driver.registersVFIODevice ? vfioDeviceSetGroup(device, driver) : nil) {
            if !driver.managesDMA { device.group?.unuseDefaultDomain() }
            // call_driver_probe: a deferral or "no match" is only a debug line.
            if ![probeDeferErrno, .noDevice, .noSuchAddressOrDevice].contains(errno) {
                log.append(probeLogPrefix(device, driver) + "probe with driver " + driver.name + " failed with error -"
                           + String(errno.rawValue))
            }
            return .inProbe(errno)
        }
        setDriver(driver, of: device)
        if let line = driver.probeLogLine { log.append(device.logPrefix + line) }
        subsystem.events.emit(.driverBound(device.address, driver: driver.name))
        observer?.driverBound(device, driver)
        return nil
    }

    /// `device_release_driver` with the device lock held (`state` is what it protects).
    func unbindLocked(_ device: Device, _ state: DeviceLockState) -> Errno? {
        device.lock.assertHeld()
        guard let driver = device.driver else { return .noDevice }
        // pci_device_remove → pci_iov_remove, while the driver is still set:
        // its remove() should have disabled SR-IOV.
        if !state.virtualFunctions.isEmpty { log.append(device.logPrefix + "driver left SR-IOV enabled after remove") }
        if driver.registersVFIODevice { vfioDeviceRemoveGroup(device, driver) }
        setDriver(nil, of: device)
        if !driver.managesDMA { device.group?.unuseDefaultDomain() }
        subsystem.events.emit(.driverUnbound(device.address, driver: driver.name))
        observer?.driverUnbound(device, driver)
        return nil
    }
}
