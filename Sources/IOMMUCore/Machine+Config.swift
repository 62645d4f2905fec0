import SystemPackage

/// Config-space state the PCI core keeps per function, and what the bus
/// layout gives a bridge's header.
extension Machine {
    /// `enable_store` (drivers/pci/pci-sysfs.c, 6.12): EPERM without
    /// CAP_SYS_ADMIN, EINVAL unless `kstrtobool` reads it, EBUSY while a
    /// driver is bound (under the device lock); true enables once more
    /// (`pci_enable_device` counts), false undoes one enable, and EIO when
    /// the device is not enabled.
    public func storeEnable(_ device: Device, _ buffer: UnsafeRawBufferPointer, caller: any Credentials) -> Errno? {
        guard caller.capable(.sysAdmin) else { return .notPermitted }
        guard let enable = KernelStrings.bool(buffer) else { return .invalidArgument }
        return device.lock.withLock { _ -> Errno? in
            if device.driver != nil { return .resourceBusy }
            if enable {
                device.userEnables.add(1, ordering: .releasing)
            } else if device.userEnables.load(ordering: .relaxed) > 0 {
                device.userEnables.subtract(1, ordering: .releasing)
            } else {
                return .ioError
            }
            return nil
        }
    }

    /// A bridge's secondary and subordinate bus numbers, from the buses of
    /// the described devices behind it (a removed device keeps its bus
    /// number assigned); (0, 0) for a bridge with nothing described behind
    /// it. The catalog is in probe order, so the bridge's own secondary bus
    /// comes first.
    public func busRange(behind bridge: Device) -> (secondary: UInt8, subordinate: UInt8) {
        let prefix = bridge.sysfsPath + "/"
        var range: (secondary: UInt8, subordinate: UInt8)?
        for record in catalog where record.sysfsPath.hasPrefix(prefix) {
            let bus = record.spec.address.bus
            range = (range?.secondary ?? bus, max(range?.subordinate ?? bus, bus))
        }
        return range ?? (0, 0)
    }

    /// Whether other functions of `device`'s slot are described: the
    /// header's multifunction bit is set only on a multi-function device.
    public func slotHasOtherFunctions(_ device: Device) -> Bool {
        let a = device.address
        return catalog.contains {
            let b = $0.spec.address
            return b.domain == a.domain && b.bus == a.bus && b.device == a.device && b.function != a.function
        }
    }
}
