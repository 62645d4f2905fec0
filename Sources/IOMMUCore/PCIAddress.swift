/// A PCI device address, `dddd:bb:dd.f` as `dev_name()` prints it.
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var domain: UInt16
    public var bus: UInt8
    public var device: UInt8
    public var function: UInt8

    public init(domain: UInt16 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        precondition(device < 32 && function < 8, "device must be < 32 and function < 8")
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses `dddd:bb:dd.f` (the form sysfs names devices by); nil otherwise.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2 else { return nil }
        let devfn = parts[2].split(separator: ".", omittingEmptySubsequences: false)
        guard devfn.count == 2, devfn[0].count == 2, devfn[1].count == 1,
              let domain = UInt16(parts[0], radix: 16), let bus = UInt8(parts[1], radix: 16),
              let device = UInt8(devfn[0], radix: 16), let function = UInt8(devfn[1], radix: 16),
              device < 32, function < 8,
              parts[..<2].allSatisfy({ $0.allSatisfy(\.isHexDigit) }), devfn.allSatisfy({ $0.allSatisfy(\.isHexDigit) })
        else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    /// Written digit by digit: a big machine names 100,000 devices at boot,
    /// and the 12 bytes stay a small (inline) string.
    public var description: String {
        String(unsafeUninitializedCapacity: 12) { out in
            writeHex(UInt64(domain), width: 4, to: out, at: 0)
            out[4] = UInt8(ascii: ":")
            writeHex(UInt64(bus), width: 2, to: out, at: 5)
            out[7] = UInt8(ascii: ":")
            writeHex(UInt64(device), width: 2, to: out, at: 8)
            out[10] = UInt8(ascii: ".")
            out[11] = UInt8(ascii: "0") + function
            return 12
        }
    }

    /// The root bus directory name under /sys/devices, e.g. `pci0000:00`.
    public var rootBusName: String { String(concatenating: "pci", hexDigits(domain, 4), ":", hexDigits(bus, 2)) }

    public static func < (a: PCIAddress, b: PCIAddress) -> Bool {
        (a.domain, a.bus, a.device, a.function) < (b.domain, b.bus, b.device, b.function)
    }
}

/// Lowercase, zero-padded hexadecimal without a prefix.
public func hexDigits<T: BinaryInteger>(_ value: T, _ width: Int) -> String {
    guard let value = UInt64(exactly: value), width <= 16 else {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
    var significant = 1
    while significant < 16 && value >> (4 * UInt64(significant)) != 0 { significant += 1 }
    let count = max(width, significant)
    return String(unsafeUninitializedCapacity: count) { out in
        writeHex(value, width: count, to: out, at: 0)
        return count
    }
}

/// `width` lowercase hex digits of `value` (its low bits) into `out` at `offset`.
private func writeHex(_ value: UInt64, width: Int, to out: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
    var rest = value
    for i in stride(from: offset + width - 1, through: offset, by: -1) {
        let nibble = UInt8(truncatingIfNeeded: rest & 0xf)
        out[i] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") - 10 + nibble
        rest >>= 4
    }
}
