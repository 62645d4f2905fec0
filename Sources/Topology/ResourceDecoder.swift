import IOMMUCore

/// `bars[]` entries.
enum BARKey: String, FieldKey {
    static let byName = nameTable()
    case index, type, is64Bit = "64bit", prefetchable, base, size
}

/// `rom`: the expansion ROM BAR.
enum ROMKey: String, FieldKey {
    static let byName = nameTable()
    case base, size
}

/// `windows`: a bridge's forwarding windows.
enum WindowsKey: String, FieldKey {
    static let byName = nameTable()
    case io, mem, prefmem
}

/// One window: inclusive base and limit.
enum WindowKey: String, FieldKey {
    static let byName = nameTable()
    case base, limit, is64Bit = "64bit"
}

/// The `bars`, `rom` and `windows` keys of a device: what the firmware
/// programmed, which `resource`, `config` and a rescan's log show.
enum ResourceDecoder {
    static let spaces: [(name: String, value: PCIResourceSpec.Space)] = [("mem", .memory), ("io", .io)]

    /// nil when the device has none of the keys.
    static func layout(_ fields: Fields<DeviceKey>, bridge: Bool) throws(Problem) -> PCIResourceLayout? {
        guard [DeviceKey.bars, .rom, .windows].contains(where: fields.has) else { return nil }
        var resources = try fields.optional(.bars, .array(of: ValueDecoder(bar))) ?? []
        var taken: Set<Int> = []
        for bar in resources {
            // A 64-bit BAR uses the next register for its upper half.
            for index in bar.is64Bit ? [bar.index, bar.index + 1] : [bar.index] where !taken.insert(index).inserted {
                throw Problem("BAR \(index) is described twice (a 64-bit BAR also takes the next one)",
                              at: .key(DeviceKey.bars.rawValue))
            }
        }
        if let rom = try fields.optional(.rom, ValueDecoder(rom)) { resources.append(rom) }
        if let windows = try fields.optional(.windows, ValueDecoder(windows)) {
            guard bridge else {
                throw Problem("only a PCI-to-PCI bridge (class 0x0604) has windows", at: .key(DeviceKey.windows.rawValue))
            }
            resources += windows
        }
        return PCIResourceLayout(resources)
    }

    static func bar(_ json: JSON) throws(Problem) -> PCIResourceSpec {
        let fields = try Fields<BARKey>(json)
        let index = Int(try fields.required(.index, .unsigned(bits: 8)))
        let space = try fields.required(.type, .choice(spaces, "BAR type"))
        let is64Bit = try fields.optional(.is64Bit, .bool) ?? false
        let prefetchable = try fields.optional(.prefetchable, .bool) ?? false
        guard index <= (is64Bit ? 4 : 5) else {
            throw Problem(is64Bit ? "a 64-bit BAR takes two registers: index 0 to 4" : "BARs are numbered 0 to 5",
                          at: .key(BARKey.index.rawValue))
        }
        if space == .io, is64Bit || prefetchable {
            throw Problem("an I/O BAR is neither 64-bit nor prefetchable", at: .key(BARKey.type.rawValue))
        }
        let (base, size) = try sizedBase(fields, .base, .size, minimum: space == .io ? 4 : 16, limit: space == .io || !is64Bit ? 1 << 32 : 0)
        return PCIResourceSpec(index: index, space: space, is64Bit: is64Bit, prefetchable: prefetchable, base: base, size: size)
    }

    static func rom(_ json: JSON) throws(Problem) -> PCIResourceSpec {
        let fields = try Fields<ROMKey>(json)
        let (base, size) = try sizedBase(fields, .base, .size, minimum: 2048, limit: 1 << 32)
        return PCIResourceSpec(index: PCIResourceSpec.romIndex, space: .memory, prefetchable: true, base: base, size: size)
    }

    /// A BAR decodes a power-of-two size at a base aligned to it, below
    /// `limit` (0: anywhere).
    private static func sizedBase<Key>(_ fields: Fields<Key>, _ baseKey: Key, _ sizeKey: Key, minimum: UInt64,
                                       limit: UInt64) throws(Problem) -> (UInt64, UInt64) {
        let base = try fields.required(baseKey, .unsigned(bits: 64))
        let size = try fields.required(sizeKey, .unsigned(bits: 64))
        guard size >= minimum, size & (size - 1) == 0 else {
            throw Problem("a BAR's size is a power of two of at least " + hexLiteral(minimum), at: .key(sizeKey.rawValue))
        }
        guard base & (size - 1) == 0 else { throw Problem("the base is not aligned to the size", at: .key(baseKey.rawValue)) }
        guard limit == 0 || base + size <= limit else {
            throw Problem("a 32-bit BAR decodes below 4 GiB", at: .key(baseKey.rawValue))
        }
        return (base, size)
    }

    static func windows(_ json: JSON) throws(Problem) -> [PCIResourceSpec] {
        let fields = try Fields<WindowsKey>(json)
        var result: [PCIResourceSpec] = []
        for (key, index) in [(WindowsKey.io, PCIResourceSpec.ioWindowIndex), (.mem, PCIResourceSpec.memoryWindowIndex),
                             (.prefmem, PCIResourceSpec.prefetchableWindowIndex)] {
            guard let window = try fields.optional(key, ValueDecoder { json throws(Problem) in try Self.window(json, key, index) }) else { continue }
            result.append(window)
        }
        return result
    }

    /// A window's base and limit are multiples of its granularity (4 KiB
    /// of I/O, 1 MiB of memory) minus one for the limit.
    static func window(_ json: JSON, _ key: WindowsKey, _ index: Int) throws(Problem) -> PCIResourceSpec {
        let fields = try Fields<WindowKey>(json)
        let space: PCIResourceSpec.Space = key == .io ? .io : .memory
        let is64Bit = try fields.optional(.is64Bit, .bool) ?? false
        if is64Bit, key != .prefmem { throw Problem("only the prefetchable window can be 64-bit", at: .key(WindowKey.is64Bit.rawValue)) }
        let base = try fields.required(.base, .unsigned(bits: key == .io ? 32 : 64))
        let limit = try fields.required(.limit, .unsigned(bits: key == .io ? 32 : 64))
        let granularity: UInt64 = key == .io ? 0x1000 : 0x10_0000
        guard base % granularity == 0 else { throw Problem("the base is not a multiple of " + hexLiteral(granularity), at: .key(WindowKey.base.rawValue)) }
        guard limit > base, (limit + 1) % granularity == 0 else {
            throw Problem("the limit is not above the base and one below a multiple of " + hexLiteral(granularity), at: .key(WindowKey.limit.rawValue))
        }
        if key != .prefmem || !is64Bit, limit > 0xffff_ffff {
            throw Problem("a 32-bit window ends below 4 GiB", at: .key(WindowKey.limit.rawValue))
        }
        return PCIResourceSpec(index: index, space: space, is64Bit: is64Bit, prefetchable: key == .prefmem,
                               base: base, size: limit - base + 1)
    }
}
