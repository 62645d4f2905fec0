import SystemPackage

/// VFIO's no-IOMMU mode (drivers/vfio/group.c, vfio_main.c): with the vfio
/// module's `enable_unsafe_noiommu_mode` on, vfio-pci may drive a device no
/// IOMMU translates; its probe makes the device a fake group of its own,
/// named `vfio-noiommu`, and taints the kernel.
extension Machine {
    /// The group name `vfio_noiommu_group_alloc` sets.
    static let noIOMMUGroupName = "vfio-noiommu"

    /// `enable_unsafe_noiommu_mode` now.
    public var noIOMMUModeEnabled: Bool { noIOMMUMode.withLock { $0 } }

    /// The parameter's sysfs store (`param_attr_store` → `param_set_bool`):
    /// `kstrtobool` of the text, EINVAL for anything it refuses. Groups made
    /// already stay.
    public func storeNoIOMMUMode(_ buffer: UnsafeRawBufferPointer) -> Errno? {
        guard let on = KernelStrings.bool(buffer) else { return .invalidArgument }
        noIOMMUMode.withLock { $0 = on }
        return nil
    }

    /// `param_get_bool`: `Y` or `N`.
    public var noIOMMUModeText: String { noIOMMUModeEnabled ? "Y\n" : "N\n" }

    /// What `VFIO_CHECK_EXTENSION` answers for `extension`: the type1
    /// backend's answer, and for `VFIO_NOIOMMU_IOMMU` the no-IOMMU
    /// backend's (`vfio_noiommu_ioctl`: 1 only while the mode is on).
    func vfioSupports(_ extension: VFIOExtension) -> Bool {
        `extension` == .noIOMMU ? noIOMMUModeEnabled : `extension`.isSupported
    }

    /// `vfio_device_set_group` → `vfio_group_find_or_alloc` in vfio-pci's
    /// probe, with the device lock held: a device in a group uses it; one
    /// in none gets a no-IOMMU group while the mode is on (logged with the
    /// taint), else the probe fails with EINVAL.
    func vfioDeviceSetGroup(_ device: Device, _ driver: PCIDriver) -> Errno? {
        device.lock.assertHeld()
        guard device.group == nil else { return nil }
        guard noIOMMUModeEnabled else { return .invalidArgument }
        let group = allocateGroup(for: device.address)
        group.addNoIOMMUDevice(device)
        log.append(probeLogPrefix(device, driver) + "Adding to iommu group \(group.id)")
        log.append(probeLogPrefix(device, driver) + "Adding kernel taint for vfio-noiommu group on device")
        observer?.deviceJoinedGroup(device, group)
        return nil
    }

    /// `vfio_device_remove_group` as vfio-pci lets the device go, with the
    /// device lock held: a no-IOMMU group's device leaves it
    /// (`iommu_group_remove_device`, logged) and the group goes with it.
    func vfioDeviceRemoveGroup(_ device: Device, _ driver: PCIDriver) {
        device.lock.assertHeld()
        guard let group = device.group, group.name == Self.noIOMMUGroupName else { return }
        log.append(probeLogPrefix(device, driver) + "Removing from iommu group \(group.id)")
        let released = removeFromGroup(device, group)
        if released { subsystem.events.emit(.groupReleased(group.id)) }
        observer?.deviceLeftGroup(device, group, released: released)
    }

    /// `dev_printk`'s prefix while `driver` probes or removes the device
    /// (`dev->driver` is set then).
    func probeLogPrefix(_ device: Device, _ driver: PCIDriver) -> String {
        String(concatenating: driver.name, " ", device.address.description, ": ")
    }
}

extension IOMMUGroup {
    /// `iommu_group_set_name(group, "vfio-noiommu")` and
    /// `iommu_group_add_device`: the fake group's only member, attached to
    /// no domain.
    func addNoIOMMUDevice(_ device: Device) {
        state.withLock { s in
            s.name = Machine.noIOMMUGroupName
            s.devices.append(.init(device: device, attached: nil))
        }
        device.setGroup(self)
    }
}
