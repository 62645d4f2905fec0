/// One BAR, expansion ROM or bridge window of a function (a `struct
/// resource` of `pci_dev->resource[]`), as the firmware programmed it.
public struct PCIResourceSpec: Sendable, Equatable {
    public enum Space: Sendable, Equatable { case io, memory }

    /// `pci_dev->resource[]` numbers (include/linux/pci.h, with CONFIG_PCI_IOV:
    /// six SR-IOV resources sit between the ROM and the bridge windows).
    public static let romIndex = 6
    public static let ioWindowIndex = 13, memoryWindowIndex = 14, prefetchableWindowIndex = 15
    /// `resource` lines: `PCI_BRIDGE_RESOURCES` for a function without a
    /// subordinate bus, `DEVICE_COUNT_RESOURCE` for a bridge (resource_show).
    public static let endpointLineCount = 13, bridgeLineCount = 17

    /// 0–5 a BAR, `romIndex`, or one of the window indices.
    public var index: Int
    public var space: Space
    public var is64Bit: Bool
    public var prefetchable: Bool
    public var base: UInt64
    public var size: UInt64

    public init(index: Int, space: Space, is64Bit: Bool = false, prefetchable: Bool = false, base: UInt64, size: UInt64) {
        self.index = index
        self.space = space
        self.is64Bit = is64Bit
        self.prefetchable = prefetchable
        self.base = base
        self.size = size
    }

    public var isWindow: Bool { index >= Self.ioWindowIndex }

    /// `pci_resource_name` (drivers/pci/pci.c, 6.12).
    public var name: String {
        switch index {
        case Self.romIndex: "ROM"
        case Self.ioWindowIndex...: "bridge window"
        default: "BAR \(index)"
        }
    }

    /// `res->flags` (include/linux/ioport.h): for a BAR, `decode_bar`
    /// (probe.c) keeps the register's low bits and adds the type; a ROM is
    /// what `pci_read_bases` sets; a window is `pci_read_bridge_*`'s
    /// (QEMU's bridges decode 16-bit I/O, `PCI_IO_RANGE_TYPE_16`).
    public var flags: UInt64 {
        let io: UInt64 = 0x100, mem: UInt64 = 0x200, prefetch: UInt64 = 0x2000, readOnly: UInt64 = 0x4000
        let sizeAlign: UInt64 = 0x40000, mem64: UInt64 = 0x100000
        if isWindow {
            if space == .io { return io }
            guard prefetchable else { return mem }
            return mem | prefetch | (is64Bit ? 0x1 | mem64 : 0)  // PCI_PREF_RANGE_TYPE_64
        }
        if index == Self.romIndex { return mem | prefetch | readOnly | sizeAlign }
        if space == .io { return 0x1 | io | sizeAlign }  // PCI_BASE_ADDRESS_SPACE_IO
        let registerBits: UInt64 = (is64Bit ? 0x4 : 0) | (prefetchable ? 0x8 : 0)
        return registerBits | mem | (prefetchable ? prefetch : 0) | (is64Bit ? mem64 : 0) | sizeAlign
    }

    /// `pci_resource_alignment`: a BAR or ROM aligns on its size
    /// (IORESOURCE_SIZEALIGN); a window on the bridge's granularity
    /// (`window_alignment`: 4 KiB of I/O, 1 MiB of memory).
    public var alignment: UInt64 {
        guard isWindow else { return size }
        return space == .io ? 0x1000 : 0x10_0000
    }

    /// `%pR` (lib/vsprintf.c `resource_string`) of the resource at `start`:
    /// `[io  0xd000-0xd01f]`, `[mem 0xfe800000-0xfe803fff 64bit pref]`.
    public func printed(at start: UInt64) -> String {
        let end = start &+ size &- 1
        switch space {
        case .io:
            return "[io  0x" + hexDigits(start, 4) + "-0x" + hexDigits(end, 4) + "]"
        case .memory:
            return "[mem 0x" + hexDigits(start, 8) + "-0x" + hexDigits(end, 8)
                + (is64Bit ? " 64bit" : "") + (prefetchable ? " pref" : "") + "]"
        }
    }

    /// `%pR` of the resource while IORESOURCE_UNSET: its size only.
    public var printedSize: String {
        (space == .io ? "[io  size 0x" + hexDigits(size, 4) : "[mem size 0x" + hexDigits(size, 8))
            + (is64Bit ? " 64bit" : "") + (prefetchable ? " pref" : "") + "]"
    }

    /// Whether `pci_bus_alloc_from_region` may place this resource in
    /// `window` with `__pci_assign_resource`'s type mask: the same space,
    /// and a prefetchable window only for a prefetchable resource.
    func fits(in window: PCIResourceSpec, matching mask: WindowMatch) -> Bool {
        guard window.space == space else { return false }
        if window.prefetchable && !prefetchable { return false }
        switch mask {
        case .exact: return space == .io || (window.prefetchable == prefetchable && window.is64Bit == is64Bit)
        case .prefetchable: return window.prefetchable == prefetchable
        case .any: return true
        }
    }

    /// The type masks `__pci_assign_resource` (setup-res.c) tries in turn.
    enum WindowMatch: CaseIterable { case exact, prefetchable, any }

    /// The masks tried for this resource: the exact match; a 64-bit
    /// prefetchable one may then go in a 32-bit prefetchable window; any
    /// prefetchable or 64-bit one in any window it fits.
    var windowMatches: [WindowMatch] {
        var masks: [WindowMatch] = [.exact]
        if prefetchable && is64Bit { masks.append(.prefetchable) }
        if space == .memory && (prefetchable || is64Bit) { masks.append(.any) }
        return masks
    }
}

/// What a function decodes: its BARs, ROM and (for a bridge) windows, by
/// resource number. Empty for a function whose resources are not described.
public struct PCIResourceLayout: Sendable, Equatable {
    public var resources: [PCIResourceSpec]

    public init(_ resources: [PCIResourceSpec]) {
        self.resources = resources.sorted { $0.index < $1.index }
    }
}
