import Synchronization

/// A PCI device behind an IOMMU unit.
///
/// Identity and firmware facts are immutable. The bound driver is kept
/// behind `binding`, a leaf lock: it is read for log prefixes
/// (`dev_driver_string`) while a group mutex is held, so nothing is ever
/// locked inside it.
public final class Device: Sendable {
    public let address: PCIAddress
    public let vendorID: UInt16
    public let deviceID: UInt16
    /// 24-bit class code, e.g. 0x020000 for an Ethernet controller.
    public let classCode: UInt32
    /// The directory of this device under the sysfs root, e.g.
    /// `devices/pci0000:00/0000:00:1c.0/0000:02:00.0`.
    public let sysfsPath: String
    /// nil for a device without IOMMU translation (a VFIO no-IOMMU group member).
    public let unit: IOMMUUnit?
    /// What the IOMMU driver's `def_domain_type()` answers for this device.
    public let domainWish: DomainType?
    /// `pci_dev->untrusted`: external-facing, the core forces DMA.
    public let untrusted: Bool
    /// Regions the IOMMU driver reports for this device, in kernel order.
    public let reservedRegions: [ReservedRegion]

    private let binding = Mutex<PCIDriver?>(nil)
    private let groupRef = Mutex<IOMMUGroup?>(nil)

    public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32,
                sysfsPath: String, unit: IOMMUUnit?, domainWish: DomainType? = nil,
                untrusted: Bool = false, reservedRegions: [ReservedRegion] = []) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.sysfsPath = sysfsPath
        self.unit = unit
        self.domainWish = domainWish
        self.untrusted = untrusted
        var sorted: [ReservedRegion] = []
        for region in reservedRegions { ReservedRegion.insert(region, into: &sorted) }
        self.reservedRegions = sorted
    }

    /// `dev->iommu->require_direct`: firmware asked for a 1:1 mapping, so the
    /// device can never sit in a blocking domain.
    public var requiresDirectMapping: Bool {
        reservedRegions.contains { $0.kind == .direct }
    }

    /// The bound driver, if any.
    public var driver: PCIDriver? { binding.withLock { $0 } }

    func setDriver(_ driver: PCIDriver?) { binding.withLock { $0 = driver } }

    /// The IOMMU group the device joined at probe.
    public var group: IOMMUGroup? { groupRef.withLock { $0 } }

    func setGroup(_ group: IOMMUGroup?) { groupRef.withLock { $0 = group } }

    /// `dev_printk` prefix: the bound driver's name, else the bus name.
    var logPrefix: String { (driver?.name ?? "pci") + " " + address.description + ": " }
}
