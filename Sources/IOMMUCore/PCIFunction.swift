/// What a function's config space shows beyond its ids and class: the
/// facts `pci_setup_device` (drivers/pci/probe.c) and `lspci` read from
/// the header and the capability lists.
public struct PCIFunctionSpec: Sendable, Equatable {
    /// The device/port type of the PCI Express capability
    /// (`PCI_EXP_FLAGS_TYPE`, include/uapi/linux/pci_regs.h).
    public enum PortType: UInt8, Sendable, CaseIterable {
        case endpoint = 0x0, legacyEndpoint = 0x1, rootPort = 0x4, upstream = 0x5, downstream = 0x6
        case pcieToPCIBridge = 0x7, pciToPCIeBridge = 0x8, rootComplexEndpoint = 0x9, eventCollector = 0xa

        /// `pci_type_str` (probe.c, 6.12), indexed by type.
        public var kernelName: String {
            switch self {
            case .endpoint: "PCIe Endpoint"
            case .legacyEndpoint: "PCIe Legacy Endpoint"
            case .rootPort: "PCIe Root Port"
            case .upstream: "PCIe Switch Upstream Port"
            case .downstream: "PCIe Switch Downstream Port"
            case .pcieToPCIBridge: "PCIe to PCI/PCI-X bridge"
            case .pciToPCIeBridge: "PCI/PCI-X to PCIe bridge"
            case .rootComplexEndpoint: "PCIe Root Complex Integrated Endpoint"
            case .eventCollector: "PCIe Root Complex Event Collector"
            }
        }

        /// Ports below which a slot can be implemented (`PCI_EXP_FLAGS_SLOT`).
        public var hasSlots: Bool { self == .rootPort || self == .downstream }
    }

    /// A capability of the standard list (`PCI_CAP_ID_*`).
    public enum Capability: UInt8, Sendable, CaseIterable {
        case powerManagement = 0x01, msi = 0x05, vendorSpecific = 0x09, bridgeSubsystem = 0x0d
        case pciExpress = 0x10, msix = 0x11, sata = 0x12
    }

    /// A capability of the extended list (`PCI_EXT_CAP_ID_*`), PCIe only.
    public enum ExtendedCapability: UInt16, Sendable, CaseIterable {
        case advancedErrorReporting = 0x0001, serialNumber = 0x0003, accessControl = 0x000d
        case alternativeRoutingID = 0x000e, addressTranslation = 0x000f, sriov = 0x0010
    }

    /// The Slot Capabilities a port reports when it implements a slot.
    public struct Slot: Sendable, Equatable {
        /// Physical Slot Number (`PCI_EXP_SLTCAP_PSN`).
        public var number: UInt16
        /// Hot-Plug Capable (`PCI_EXP_SLTCAP_HPC`).
        public var hotPlug: Bool

        public init(number: UInt16, hotPlug: Bool) {
            self.number = number
            self.hotPlug = hotPlug
        }
    }

    /// nil: a conventional PCI function (256 bytes of config space).
    public var portType: PortType?
    public var revision: UInt8
    public var subsystemVendor: UInt16
    public var subsystemDevice: UInt16
    /// `pdev->irq`, the legacy interrupt line (`irq`).
    public var irq: UInt32
    /// The ACS Capability register; nil: no ACS capability.
    public var accessControl: UInt16?
    public var slot: Slot?
    /// The standard list, in list order.
    public var capabilities: [Capability]
    /// The extended list (from offset 0x100), in list order.
    public var extendedCapabilities: [ExtendedCapability]

    public init(portType: PortType? = nil, revision: UInt8 = 0, subsystemVendor: UInt16 = 0, subsystemDevice: UInt16 = 0,
                irq: UInt32 = 0, accessControl: UInt16? = nil, slot: Slot? = nil,
                capabilities: [Capability]? = nil, extendedCapabilities: [ExtendedCapability] = []) {
        self.portType = portType
        self.revision = revision
        self.subsystemVendor = subsystemVendor
        self.subsystemDevice = subsystemDevice
        self.irq = irq
        self.accessControl = accessControl
        self.slot = slot
        self.capabilities = capabilities ?? (portType == nil ? [] : [.pciExpress])
        self.extendedCapabilities = extendedCapabilities
    }

    /// A conventional function with no capabilities, revision 0 and no
    /// subsystem ids: what a description without these facts presents.
    public static let conventional = PCIFunctionSpec()

    /// `dev->cfg_size`: 4096 bytes for PCIe, 256 for conventional PCI.
    public var configSize: Int { portType == nil ? 256 : 4096 }

    /// A VF of a PF with these facts: the same function without the
    /// SR-IOV capability (a VF has none) and without an interrupt line.
    public var virtualFunction: PCIFunctionSpec {
        var vf = self
        vf.extendedCapabilities.removeAll { $0 == .sriov }
        vf.irq = 0
        return vf
    }
}

extension MachineSpec.DeviceSpec {
    /// The header type's layout (`PCI_HEADER_TYPE_*`), from the class: 1 for
    /// a PCI-to-PCI bridge, 2 for a CardBus bridge, else 0.
    public var headerLayout: UInt8 {
        switch classCode >> 8 {
        case 0x0604, 0x0609: 1
        case 0x0607: 2
        default: 0
        }
    }

    /// The function's config-space facts; the defaults when not described.
    public var configFacts: PCIFunctionSpec { function ?? .conventional }

    /// `pci_setup_device`'s line (probe.c), after the `pci BDF: ` prefix:
    /// `[vvvv:dddd] type 00 class 0x010802`, and from v6.8 the type
    /// (`pci_type_str`): `... class 0x010802 PCIe Endpoint`.
    public func enumerationLogLine(namingType: Bool) -> String {
        let line = "[" + hexDigits(vendorID, 4) + ":" + hexDigits(deviceID, 4) + "] type " + hexDigits(headerLayout, 2)
            + " class 0x" + hexDigits(classCode, 6)
        guard namingType else { return line }
        let type: String
        if let port = configFacts.portType {
            type = port.kernelName
        } else {
            type = switch headerLayout { case 0: "conventional PCI endpoint"; case 1: "conventional PCI bridge"; default: "CardBus bridge" }
        }
        return line + " " + type
    }
}
