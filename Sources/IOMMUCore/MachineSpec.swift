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
        /// One shared array for the common default (a big machine has
        /// 100,000 devices; an array literal per device would allocate each).
        private static let functionLevelReset = ["flr"]
        @OutOfLine public var sriov: SRIOVSpec?
        /// For a VF: its PF.
        public var physicalFunction: PCIAddress?
        /// The IOMMU driver defers the first attach to the first DMA mapping.
        public var attachDeferred: Bool
        /// The multifunction bit of the function's own header type. Only a
        /// function other than 0 re-added by a rescan depends on it: without
        /// it, the function gets a group of its own (see `Machine.join`).
        public var multifunction: Bool
        /// Config-space facts (PCIe port type, capabilities, revision...);
        /// nil: `PCIFunctionSpec.conventional`.
        @OutOfLine public var function: PCIFunctionSpec?
        /// BARs, ROM and bridge windows as the firmware left them; nil: not
        /// described (the `resource` lines read as unassigned).
        @OutOfLine public var resources: PCIResourceLayout?

        public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32,
                    parent: PCIAddress? = nil, unit: String?, group: String, driver: String? = nil,
                    domainWish: DomainType? = nil, untrusted: Bool = false,
                    reservedRegions: [ReservedRegion] = [], nativeDriver: String? = nil, ats: Bool = false,
                    resetMethods: [String]? = nil, resetDuration: Duration = .milliseconds(100),
                    sriov: SRIOVSpec? = nil, physicalFunction: PCIAddress? = nil, attachDeferred: Bool = false,
                    multifunction: Bool = true, function: PCIFunctionSpec? = nil, resources: PCIResourceLayout? = nil) {
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
            self.resetMethods = resetMethods ?? (classCode >> 16 == 0x06 ? [] : Self.functionLevelReset)
            self.resetDuration = resetDuration
            self.sriov = sriov
            self.physicalFunction = physicalFunction
            self.attachDeferred = attachDeferred
            self.multifunction = multifunction
            self.function = function
            self.resources = resources
        }
    }

    /// A PF's SR-IOV capability, as `sriov_*` shows it.
    public struct SRIOVSpec: Sendable, Equatable {
        public var totalVFs: Int
        /// First VF offset and VF stride, in routing ids.
        public var offset: Int
        public var stride: Int
        public var vfDeviceID: UInt16
        /// The driver that probes new VFs when autoprobe is on.
        public var vfDriver: String?
        public var driversAutoprobe: Bool

        public init(totalVFs: Int, offset: Int = 1, stride: Int = 1, vfDeviceID: UInt16,
                    vfDriver: String? = nil, driversAutoprobe: Bool = true) {
            self.totalVFs = totalVFs
            self.offset = offset
            self.stride = stride
            self.vfDeviceID = vfDeviceID
            self.vfDriver = vfDriver
            self.driversAutoprobe = driversAutoprobe
        }
    }

    public var boot: BootOptions
    public var units: [IOMMUUnit]
    public var drivers: [PCIDriver]
    public var devices: [DeviceSpec]
    /// Group ids to restore (a dump's): a group created by probing one of
    /// these devices takes the id given instead of the lowest free one, so
    /// ids that hot-plug history moved away from probe order come back.
    /// Each id is used once; a group created again later gets the lowest
    /// free id, as usual.
    public var groupIDs: [PCIAddress: Int]
    /// The kernel the machine runs unless its boot names another; nil:
    /// `KernelProfile.current`.
    public var profile: KernelProfile?
    /// The hot-plug slots acpiphp registers.
    public var slots: [SlotSpec]

    public init(boot: BootOptions, units: [IOMMUUnit], drivers: [PCIDriver], devices: [DeviceSpec],
                groupIDs: [PCIAddress: Int] = [:], profile: KernelProfile? = nil, slots: [SlotSpec] = []) {
        self.boot = boot
        self.units = units
        self.drivers = drivers
        self.devices = devices
        self.slots = slots
        self.groupIDs = groupIDs
        self.profile = profile
    }
}

/// A machine description the core cannot boot, with the reason.
public struct MachineSpecError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
