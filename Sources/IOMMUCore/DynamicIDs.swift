import SystemPackage

/// A `new_id` entry (`struct pci_device_id` of a dynamic id).
public struct PCIDynamicID: Sendable, Equatable {
    /// PCI_ANY_ID.
    public static let any: UInt32 = 0xffff_ffff

    public var vendor: UInt32
    public var device: UInt32
    public var subvendor: UInt32 = PCIDynamicID.any
    public var subdevice: UInt32 = PCIDynamicID.any
    public var classCode: UInt32 = 0
    public var classMask: UInt32 = 0
    /// The seventh field, when given: `new_id_store` then skips its
    /// "already matched" check, so a dump writes the id back with it.
    public var driverData: UInt64?

    /// `pci_match_one_device`.
    func matches(_ d: Device) -> Bool {
        (vendor == Self.any || vendor == UInt32(d.vendorID)) && (device == Self.any || device == UInt32(d.deviceID))
            && ((d.classCode ^ classCode) & classMask) == 0
    }
}

/// `new_id` / `remove_id` (`drivers/pci/pci-driver.c`): ids added to a
/// driver at run time, matched before its static table.
extension Machine {
    /// `new_id_store`: "vendor device [subvendor subdevice class class_mask
    /// driver_data]" in hex. Fewer than two fields → EINVAL; an id the
    /// driver already matches → EEXIST (unless all seven fields are given);
    /// a driver_data that no table entry carries → EINVAL. A new id binds
    /// every matching unbound device at once (`driver_attach`).
    public func addDynamicID(_ driver: PCIDriver, _ buffer: UnsafeRawBufferPointer) -> Errno? {
        let f = KernelStrings.hexFields(buffer, limit: 7)
        guard f.count >= 2 else { return .invalidArgument }
        let id = PCIDynamicID(vendor: UInt32(truncatingIfNeeded: f[0]), device: UInt32(truncatingIfNeeded: f[1]),
                              subvendor: f.count > 2 ? UInt32(truncatingIfNeeded: f[2]) : PCIDynamicID.any,
                              subdevice: f.count > 3 ? UInt32(truncatingIfNeeded: f[3]) : PCIDynamicID.any,
                              classCode: f.count > 4 ? UInt32(truncatingIfNeeded: f[4]) : 0,
                              classMask: f.count > 5 ? UInt32(truncatingIfNeeded: f[5]) : 0,
                              driverData: f.count == 7 ? f[6] : nil)
        if f.count != 7 && knownIDs(of: driver).contains(where: { $0.vendor == id.vendor && $0.device == id.device }) {
            return .fileExists
        }
        // Tables of drivers with an id table carry driver_data 0 here.
        if f.count == 7 && f[6] != 0 && !PCIDriver.dmaManagingNames.contains(driver.name) { return .invalidArgument }
        dynamicIDs.withLock { $0[driver.name, default: []].append(id) }
        for device in devices where device.driver == nil { probeWith(driver, device) }
        return nil
    }

    /// `remove_id_store`: drops the first dynamic id matching the fields;
    /// ENODEV if none does. Bound devices stay bound.
    public func removeDynamicID(_ driver: PCIDriver, _ buffer: UnsafeRawBufferPointer) -> Errno? {
        let f = KernelStrings.hexFields(buffer, limit: 6)
        guard f.count >= 2 else { return .invalidArgument }
        let subvendor = f.count > 2 ? UInt32(truncatingIfNeeded: f[2]) : PCIDynamicID.any
        let subdevice = f.count > 3 ? UInt32(truncatingIfNeeded: f[3]) : PCIDynamicID.any
        let classCode = f.count > 4 ? UInt32(truncatingIfNeeded: f[4]) : 0
        let classMask = f.count > 5 ? UInt32(truncatingIfNeeded: f[5]) : 0
        return dynamicIDs.withLock { table -> Errno? in
            guard let index = table[driver.name]?.firstIndex(where: { id in
                id.vendor == UInt32(truncatingIfNeeded: f[0]) && id.device == UInt32(truncatingIfNeeded: f[1])
                    && (subvendor == PCIDynamicID.any || id.subvendor == subvendor)
                    && (subdevice == PCIDynamicID.any || id.subdevice == subdevice)
                    && ((id.classCode ^ classCode) & classMask) == 0
            }) else { return .noDevice }
            table[driver.name]!.remove(at: index)
            return nil
        }
    }

    /// `driver`'s dynamic ids, oldest first.
    public func dynamicIDs(of driver: PCIDriver) -> [PCIDynamicID] {
        dynamicIDs.withLock { $0[driver.name] ?? [] }
    }

    /// Whether one of `driver`'s dynamic ids matches `device`.
    func dynamicIDMatches(_ driver: PCIDriver, _ device: Device) -> Bool {
        dynamicIDs.withLock { $0[driver.name]?.contains { $0.matches(device) } ?? false }
    }

    /// The ids `driver` already matches: its dynamic ids and its static
    /// table (the ids of the devices it is the native driver of).
    private func knownIDs(of driver: PCIDriver) -> [(vendor: UInt32, device: UInt32)] {
        let dynamic = dynamicIDs(of: driver).map { (vendor: $0.vendor, device: $0.device) }
        let table = catalogIDs(nativeTo: driver.name).map { (vendor: UInt32($0.vendor), device: UInt32($0.device)) }
        return dynamic + table
    }

    /// `driver_attach` for one device: bind if `driver` matches it.
    private func probeWith(_ driver: PCIDriver, _ device: Device) {
        device.lock.withLock { state in
            guard state.isPresent, device.driver == nil,
                  matches(driver, device, override: state.driverOverride) else { return }
            // __driver_attach ignores what the probe returns.
            _ = bindLocked(device, driver)
        }
    }
}
