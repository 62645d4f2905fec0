/// Everything needed to boot a `Machine`: what firmware and hardware
/// present before the IOMMU core runs.
public struct MachineSpec: Sendable {
    /// One PCI function as the bus scan finds it.
    public struct DeviceSpec: Sendable {
        public var address: PCIAddress
        public var vendorID: UInt16
        public var deviceID: UInt16
        public var classCode: UInt32
        /// The bridge the device sits behind; nil on a root bus.
        public var parent: PCIAddress?
        /// The IOMMU unit translating for it; nil for a VFIO no-IOMMU device.
        public var unit: String?
        /// Devices with the same label share an IOMMU group. Ids are not
        /// taken from labels: the core assigns the lowest free id in probe
        /// order, as the kernel's IDA does.
        public var group: String
        /// The driver bound at boot.
        public var driver: String?
        public var domainWish: DomainType?
        public var untrusted: Bool
        public var reservedRegions: [ReservedRegion]
        /// The driver whose id table matches the device; defaults to `driver`.
        /// A device unbound at boot can still name one for `drivers_probe`.
        public var nativeDriver: String?
        /// ATS-capable (reset fencing applies to it).
        public var ats: Bool
        /// `reset_method` at boot; empty: the device cannot be reset.
        public var resetMethods: [String]
        /// How long a reset takes.
        public var resetDuration: Duration

        public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32,
                    parent: PCIAddress? = nil, unit: String?, group: String, driver: String? = nil,
                    domainWish: DomainType? = nil, untrusted: Bool = false,
                    reservedRegions: [ReservedRegion] = [], nativeDriver: String? = nil, ats: Bool = false,
                    resetMethods: [String]? = nil, resetDuration: Duration = .milliseconds(100)) {
            self.address = address
            self.vendorID = vendorID
            self.deviceID = deviceID
            self.classCode = classCode
            self.parent = parent
            self.unit = unit
            self.group = group
            self.driver = driver
            self.domainWish = domainWish
            self.untrusted = untrusted
            self.reservedRegions = reservedRegions
            self.nativeDriver = nativeDriver ?? driver
            self.ats = ats
            // Bridges and host bridges have no function reset here (as on QEMU's
            // root ports); endpoints do FLR unless told otherwise.
            self.resetMethods = resetMethods ?? (classCode >> 16 == 0x06 ? [] : ["flr"])
            self.resetDuration = resetDuration
        }
    }

    public var boot: BootOptions
    public var units: [IOMMUUnit]
    public var drivers: [PCIDriver]
    public var devices: [DeviceSpec]

    public init(boot: BootOptions, units: [IOMMUUnit], drivers: [PCIDriver], devices: [DeviceSpec]) {
        self.boot = boot
        self.units = units
        self.drivers = drivers
        self.devices = devices
    }
}

/// A machine description the core cannot boot, with the reason.
public struct MachineSpecError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
