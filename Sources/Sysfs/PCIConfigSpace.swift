import IOMMUCore

/// A binary sysfs attribute (`struct bin_attribute`): a fixed size, and
/// reads and writes at an offset. Each read asks the content again.
public final class BinaryAttribute: Sendable {
    /// `bin_attribute.size`, the file's st_size.
    public let size: Int
    private let reader: @Sendable (_ offset: Int, _ count: Int, _ privileged: Bool) -> [UInt8]
    private let writer: @Sendable (_ offset: Int, _ bytes: UnsafeRawBufferPointer) -> Int

    public init(size: Int, read: @escaping @Sendable (_ offset: Int, _ count: Int, _ privileged: Bool) -> [UInt8],
                write: @escaping @Sendable (_ offset: Int, _ bytes: UnsafeRawBufferPointer) -> Int) {
        self.size = size
        self.reader = read
        self.writer = write
    }

    /// Up to `count` bytes from `offset`; `privileged`: the opener had
    /// CAP_SYS_ADMIN.
    func read(offset: Int, count: Int, privileged: Bool) -> [UInt8] { reader(offset, count, privileged) }

    /// Writes `bytes` (already clamped to the size) at `offset`; returns the count taken.
    func write(offset: Int, _ bytes: UnsafeRawBufferPointer) -> Int { writer(offset, bytes) }
}

/// A function's `config` file: the header and capability lists built from
/// its description, with the registers the PCI core changes (Command,
/// SR-IOV Control and NumVFs) read from the model at each read.
///
/// The layout is the model's own (standard capabilities packed from 0x40,
/// extended ones from 0x100); what a reader can rely on is what the lists
/// and the registers say, as lspci decodes them.
final class PCIConfigSpace: Sendable {
    private let device: Device
    private let machine: Machine
    /// The image without the live registers, built on first read (a
    /// bridge's bus numbers look at every described device once).
    private let image = RankedMutex<[UInt8]?>(.configImage, nil)
    /// The registers software may set and the model keeps (Cache Line
    /// Size, Latency Timer, Interrupt Line), by offset; other writes meet
    /// read-only hardware bits and are dropped, as the device drops them.
    private static let writableRegisters: Set<Int> = [0x0c, 0x0d, 0x3c]

    init(device: Device, machine: Machine) {
        self.device = device
        self.machine = machine
    }

    /// `pci_read_config` (drivers/pci/pci-sysfs.c): an opener without
    /// CAP_SYS_ADMIN reads only the first 64 bytes ("Several chips lock up
    /// trying to read undefined config space"; 128 for CardBus), root the
    /// whole `cfg_size`.
    func read(offset: Int, count: Int, privileged: Bool) -> [UInt8] {
        let limit = privileged ? device.function.configSize : device.record.spec.headerLayout == 2 ? 128 : 64
        guard offset >= 0, offset < limit, count > 0 else { return [] }
        let bytes = current()
        return Array(bytes[offset..<min(offset + count, limit)])
    }

    /// `pci_write_config`: root only (the file is 0644), within `cfg_size`.
    func write(offset: Int, _ bytes: UnsafeRawBufferPointer) -> Int {
        image.withLock { stored in
            var image = stored ?? build()
            for (i, byte) in bytes.enumerated() where Self.writableRegisters.contains(offset + i) {
                image[offset + i] = byte
            }
            stored = image
        }
        return bytes.count
    }

    var attribute: BinaryAttribute {
        BinaryAttribute(size: device.function.configSize,
                        read: { [self] in read(offset: $0, count: $1, privileged: $2) },
                        write: { [self] in write(offset: $0, $1) })
    }

    /// The image with the live registers filled in.
    private func current() -> [UInt8] {
        var bytes = image.withLock { stored in
            if stored == nil { stored = build() }
            return stored!
        }
        // PCI_COMMAND: pci_enable_device turns on memory decoding; a bound
        // driver that enables the device also makes it a bus master.
        var command: UInt16 = 0
        if device.enableCount > 0 { command |= 0x0002 }
        if device.driver?.enablesDevice == true { command |= 0x0004 }
        bytes.put16(command, at: 0x04)
        for (resource, base) in machine.registerContents(of: device) {
            Self.putRegister(resource, base, layout: device.record.spec.headerLayout, into: &bytes)
        }
        if let sriov = sriovOffset(in: bytes) {
            // PCI_SRIOV_CTRL: VF Enable and VF MSE while VFs exist; NumVFs.
            let count = device.virtualFunctions.count
            var control = bytes.get16(at: sriov + 0x08) & ~0x0009
            if count > 0 { control |= 0x0009 }
            bytes.put16(control, at: sriov + 0x08)
            bytes.put16(UInt16(count), at: sriov + 0x10)
        }
        return bytes
    }

    /// A BAR (0x10 + 4n: the base with the type bits decode_bar reads;
    /// a 64-bit BAR's upper half in the next), the ROM (0x30, type 0;
    /// 0x38 on a bridge) or a window (I/O 0x1c/0x30, memory 0x20,
    /// prefetchable 0x24/0x28) as the hardware holds it.
    private static func putRegister(_ resource: PCIResourceSpec, _ base: UInt64, layout: UInt8, into bytes: inout [UInt8]) {
        let end = base &+ resource.size &- 1
        switch resource.index {
        case PCIResourceSpec.romIndex:
            bytes.put32(UInt32(truncatingIfNeeded: base), at: layout == 1 ? 0x38 : 0x30)
        case PCIResourceSpec.ioWindowIndex:
            bytes[0x1c] = UInt8(truncatingIfNeeded: base >> 8) & 0xf0
            bytes[0x1d] = UInt8(truncatingIfNeeded: end >> 8) & 0xf0
            bytes.put16(UInt16(truncatingIfNeeded: base >> 16), at: 0x30)
            bytes.put16(UInt16(truncatingIfNeeded: end >> 16), at: 0x32)
        case PCIResourceSpec.memoryWindowIndex:
            bytes.put16(UInt16(truncatingIfNeeded: base >> 16) & 0xfff0, at: 0x20)
            bytes.put16(UInt16(truncatingIfNeeded: end >> 16) & 0xfff0, at: 0x22)
        case PCIResourceSpec.prefetchableWindowIndex:
            let type: UInt16 = resource.is64Bit ? 0x1 : 0
            bytes.put16(UInt16(truncatingIfNeeded: base >> 16) & 0xfff0 | type, at: 0x24)
            bytes.put16(UInt16(truncatingIfNeeded: end >> 16) & 0xfff0 | type, at: 0x26)
            if resource.is64Bit {
                bytes.put32(UInt32(truncatingIfNeeded: base >> 32), at: 0x28)
                bytes.put32(UInt32(truncatingIfNeeded: end >> 32), at: 0x2c)
            }
        default:
            let offset = 0x10 + 4 * resource.index
            let low = UInt32(truncatingIfNeeded: base) | UInt32(truncatingIfNeeded: resource.flags & 0xf)
            bytes.put32(low, at: offset)
            if resource.is64Bit { bytes.put32(UInt32(truncatingIfNeeded: base >> 32), at: offset + 4) }
        }
    }

    /// Where the SR-IOV capability is, walking the extended list.
    private func sriovOffset(in bytes: [UInt8]) -> Int? {
        guard bytes.count > 0x100 else { return nil }
        var offset = 0x100
        while offset != 0 {
            let header = bytes.get32(at: offset)
            if header & 0xffff == UInt32(PCIFunctionSpec.ExtendedCapability.sriov.rawValue) { return offset }
            offset = Int(header >> 20)
        }
        return nil
    }

    /// The header and both capability lists from the description.
    private func build() -> [UInt8] {
        let spec = device.record.spec
        let facts = device.function
        var bytes = [UInt8](repeating: 0, count: facts.configSize)
        bytes.put16(spec.vendorID, at: 0x00)
        bytes.put16(spec.deviceID, at: 0x02)
        bytes[0x08] = facts.revision
        bytes[0x09] = UInt8(truncatingIfNeeded: spec.classCode)
        bytes[0x0a] = UInt8(truncatingIfNeeded: spec.classCode >> 8)
        bytes[0x0b] = UInt8(truncatingIfNeeded: spec.classCode >> 16)
        let multifunction = spec.multifunction && machine.slotHasOtherFunctions(device)
        bytes[0x0e] = spec.headerLayout | (multifunction ? 0x80 : 0)
        if spec.headerLayout == 1 {
            let buses = machine.busRange(behind: device)
            bytes[0x18] = spec.address.bus
            bytes[0x19] = buses.secondary
            bytes[0x1a] = buses.subordinate
        } else {
            bytes.put16(facts.subsystemVendor, at: 0x2c)
            bytes.put16(facts.subsystemDevice, at: 0x2e)
        }
        bytes[0x3c] = UInt8(truncatingIfNeeded: facts.irq)
        if facts.irq != 0 { bytes[0x3d] = 1 }  // INTA#
        writeCapabilities(facts, into: &bytes)
        writeExtendedCapabilities(facts, into: &bytes)
        return bytes
    }

    /// The standard list from 0x40 (`PCI_CAPABILITY_LIST` at 0x34, and
    /// Status' Capabilities List bit).
    private func writeCapabilities(_ facts: PCIFunctionSpec, into bytes: inout [UInt8]) {
        guard !facts.capabilities.isEmpty else { return }
        bytes.put16(0x0010, at: 0x06)
        var offset = 0x40
        var link = 0x34
        for capability in facts.capabilities {
            bytes[link] = UInt8(offset)
            bytes[offset] = capability.rawValue
            link = offset + 1
            offset += fill(capability, facts, at: offset, into: &bytes)
        }
    }

    /// One capability's registers; returns its length (a multiple of 4).
    private func fill(_ capability: PCIFunctionSpec.Capability, _ facts: PCIFunctionSpec, at offset: Int,
                      into bytes: inout [UInt8]) -> Int {
        switch capability {
        case .powerManagement:
            bytes.put16(0x0003, at: offset + 2)  // PCI PM version 3
            return 8
        case .msi:
            bytes.put16(0x0080, at: offset + 2)  // 64-bit addresses
            return 0x18
        case .vendorSpecific:
            bytes[offset + 2] = 0x10  // the capability's length
            return 0x10
        case .bridgeSubsystem:
            bytes.put16(facts.subsystemVendor, at: offset + 4)
            bytes.put16(facts.subsystemDevice, at: offset + 6)
            return 8
        case .pciExpress:
            fillExpress(facts, at: offset, into: &bytes)
            return 0x3c
        case .msix:
            return 0x0c
        case .sata:
            bytes[offset + 2] = 0x10  // SATA capability revision 1.0
            return 8
        }
    }

    /// PCI_EXP_FLAGS (version 2, the port type, Slot Implemented),
    /// PCI_EXP_DEVCAP (Function Level Reset when `flr` is a reset method)
    /// and PCI_EXP_SLTCAP (Hot-Plug Capable, Physical Slot Number).
    private func fillExpress(_ facts: PCIFunctionSpec, at offset: Int, into bytes: inout [UInt8]) {
        var flags = UInt16(0x0002) | UInt16(facts.portType?.rawValue ?? 0) << 4
        if facts.slot != nil { flags |= 0x0100 }
        bytes.put16(flags, at: offset + 2)
        if device.resetMethods.contains("flr") { bytes.put32(0x1000_0000, at: offset + 4) }
        if let slot = facts.slot {
            bytes.put32(UInt32(slot.number) << 19 | (slot.hotPlug ? 0x40 : 0), at: offset + 0x14)
        }
    }

    /// The extended list from 0x100: each header is the id, version 1 and
    /// the next offset in bits 31:20.
    private func writeExtendedCapabilities(_ facts: PCIFunctionSpec, into bytes: inout [UInt8]) {
        var offset = 0x100
        for (index, capability) in facts.extendedCapabilities.enumerated() {
            let length = fillExtended(capability, facts, at: offset, into: &bytes)
            let next = index + 1 < facts.extendedCapabilities.count ? offset + length : 0
            bytes.put32(UInt32(capability.rawValue) | 0x1_0000 | UInt32(next) << 20, at: offset)
            offset += length
        }
    }

    private func fillExtended(_ capability: PCIFunctionSpec.ExtendedCapability, _ facts: PCIFunctionSpec,
                              at offset: Int, into bytes: inout [UInt8]) -> Int {
        switch capability {
        case .advancedErrorReporting:
            return 0x48
        case .serialNumber:
            return 0x0c
        case .accessControl:
            let available = facts.accessControl ?? 0
            bytes.put16(available, at: offset + 4)
            bytes.put16(Self.enabledACS(available, untrusted: device.untrusted), at: offset + 6)
            return 8
        case .alternativeRoutingID:
            return 8
        case .addressTranslation:
            return 8
        case .sriov:
            guard let sriov = device.sriov else { return 0x40 }
            // sriov_init sets ARI Capable Hierarchy when ARI is on for the
            // bus (pci_ari_enabled), which a function with ARI gets.
            if facts.extendedCapabilities.contains(.alternativeRoutingID) { bytes.put16(0x0010, at: offset + 0x08) }
            bytes.put16(UInt16(sriov.totalVFs), at: offset + 0x0c)  // InitialVFs
            bytes.put16(UInt16(sriov.totalVFs), at: offset + 0x0e)
            bytes.put16(UInt16(sriov.offset), at: offset + 0x14)
            bytes.put16(UInt16(sriov.stride), at: offset + 0x16)
            bytes.put16(sriov.vfDeviceID, at: offset + 0x1a)
            return 0x40
        }
    }

    /// `pci_std_enable_acs` (drivers/pci/pci.c): Source Validation, P2P
    /// Request and Completion Redirect and Upstream Forwarding where
    /// available, Translation Blocking only for an untrusted device.
    static func enabledACS(_ available: UInt16, untrusted: Bool) -> UInt16 {
        available & (0x0001 | 0x0004 | 0x0008 | 0x0010 | (untrusted ? 0x0002 : 0))
    }
}

extension [UInt8] {
    /// Little-endian, as config space is.
    mutating func put16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value)
        self[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    mutating func put32(_ value: UInt32, at offset: Int) {
        put16(UInt16(truncatingIfNeeded: value), at: offset)
        put16(UInt16(truncatingIfNeeded: value >> 16), at: offset + 2)
    }

    func get16(at offset: Int) -> UInt16 { UInt16(self[offset]) | UInt16(self[offset + 1]) << 8 }

    func get32(at offset: Int) -> UInt32 { UInt32(get16(at: offset)) | UInt32(get16(at: offset + 2)) << 16 }
}
