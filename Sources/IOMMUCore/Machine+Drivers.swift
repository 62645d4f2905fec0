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
        device.lock.withLock { _ in bindLocked(device, driver) }
    }

    /// Releases the device's driver (`device_release_driver`): the group
    /// reference goes back (`pci_dma_cleanup`). ENODEV if none is bound.
    public func unbind(_ device: Device) -> Errno? {
        device.lock.withLock { state in unbindLocked(device, state) }
    }

    /// `bind_store`: `driver` must match the device (its id table, or the
    /// device's `driver_override` naming it), else ENODEV.
    public func attach(_ driver: PCIDriver, to device: Device) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent, matches(driver, device, override: state.driverOverride) else { return .noDevice }
            return bindLocked(device, driver)
        }
    }

    /// `unbind_store`: ENODEV unless `driver` is the one bound.
    public func detach(_ driver: PCIDriver, from device: Device) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent, device.driver == driver else { return .noDevice }
            return unbindLocked(device, state)
        }
    }

    /// `drivers_probe` (`bus_rescan_devices_helper`): an unbound device gets
    /// the first driver that matches; no match is not an error, a failing
    /// probe (EBUSY while a user owns the group) is.
    public func probe(_ device: Device) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent, device.driver == nil,
                  let driver = matchingDriver(device, override: state.driverOverride) else { return nil }
            return bindLocked(device, driver)
        }
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

    /// `really_probe` with the device lock held.
    func bindLocked(_ device: Device, _ driver: PCIDriver) -> Errno? {
        device.lock.assertHeld()
        if device.driver != nil { return .resourceBusy }
        if !driver.managesDMA, let group = device.group, let error = group.useDefaultDomain() { return error }
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
        setDriver(nil, of: device)
        if !driver.managesDMA { device.group?.unuseDefaultDomain() }
        subsystem.events.emit(.driverUnbound(device.address, driver: driver.name))
        observer?.driverUnbound(device, driver)
        return nil
    }
}
