/// Told about changes of a machine's device tree, so that its sysfs view
/// can follow. Calls come from the thread that made the change, after the
/// model is consistent, never with a group mutex or the registry held (an
/// observer may read groups), but possibly with the device's lock held.
public protocol MachineObserver: AnyObject, Sendable {
    /// A hot-added device, already in its group (which may be new).
    func deviceAdded(_ device: Device)
    /// A hot-removed device; `releasedGroup` is its group if it went away
    /// with the device.
    func deviceRemoved(_ device: Device, releasedGroup: IOMMUGroup?)
    /// A group released while its last device stays: a hot-added device
    /// whose group's default domain could not be set up left it again.
    func groupReleased(_ group: IOMMUGroup)
    /// A present device joined a group after its probe (VFIO's no-IOMMU
    /// mode made the group for it).
    func deviceJoinedGroup(_ device: Device, _ group: IOMMUGroup)
    /// A present device left its group (its no-IOMMU group, as vfio-pci let
    /// it go); `released`: the group went with it.
    func deviceLeftGroup(_ device: Device, _ group: IOMMUGroup, released: Bool)
    func driverBound(_ device: Device, _ driver: PCIDriver)
    func driverUnbound(_ device: Device, _ driver: PCIDriver)
    /// A bridge's secondary bus created by a scan, its slots registered.
    func busAdded(_ bus: PCIBus)
    /// A bus removed with its bridge, its slots unregistered.
    func busRemoved(_ bus: PCIBus)
}
