/// The drivers a machine registered at boot, by index: what a device's
/// bound-driver atomic holds.
final class DriverTable: Sendable {
    let all: [PCIDriver]
    private let indices: [String: Int]

    init(_ drivers: some Sequence<PCIDriver>) {
        all = drivers.sorted { $0.name < $1.name }
        indices = Dictionary(all.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// A registered driver's index.
    func index(of driver: PCIDriver) -> Int {
        guard let index = indices[driver.name] else { preconditionFailure("driver \(driver.name) is not registered") }
        return index
    }
}

/// The devices bound to one driver (`drv->p->klist_devices`), behind a
/// leaf lock of their own: a driver's directory lists them without
/// looking at every device.
final class BoundDevices: Sendable {
    private let devices = RankedMutex<[ObjectIdentifier: Device]>(.boundDevices, [:])

    func add(_ device: Device) { devices.withLock { $0[ObjectIdentifier(device)] = device } }
    func remove(_ device: Device) { _ = devices.withLock { $0.removeValue(forKey: ObjectIdentifier(device)) } }
    var all: [Device] { devices.withLock { Array($0.values) } }
}

extension Machine {
    /// The devices bound to `driver` (`driver_for_each_device`), in no
    /// particular order.
    public func devices(boundTo driver: PCIDriver) -> [Device] { boundDevices[driver.name]?.all ?? [] }

    /// `driver_bound` / `__device_release_driver`: the device's driver and
    /// the drivers' device lists change together, under the device lock.
    func setDriver(_ driver: PCIDriver?, of device: Device) {
        device.lock.assertHeld()
        if let old = device.driver { boundDevices[old.name]?.remove(device) }
        device.setDriver(driver)
        if let driver { boundDevices[driver.name]?.add(device) }
    }
}
