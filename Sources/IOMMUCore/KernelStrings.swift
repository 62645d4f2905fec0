/// The kernel's string-to-number helper as sysfs stores use it.
public enum KernelStrings {
    /// `kstrtoul(buf, 0, &val)` on a sysfs store buffer: an optional `+`,
    /// then `0x`/`0X` hex, a leading `0` octal or decimal digits, then at
    /// most one newline before the end (or a NUL). nil where the kernel
    /// returns -EINVAL or -ERANGE.
    public static func unsignedLong(_ buffer: UnsafeRawBufferPointer) -> UInt64? {
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        var i = 0
        if i < end && buffer[i] == UInt8(ascii: "+") { i += 1 }
        var radix: UInt64 = 10
        if i + 1 < end && buffer[i] == UInt8(ascii: "0") && (buffer[i + 1] | 0x20) == UInt8(ascii: "x") {
            radix = 16
            i += 2
        } else if i < end && buffer[i] == UInt8(ascii: "0") {
            radix = 8
        }
        let digitsStart = i
        var value: UInt64 = 0
        while i < end, let digit = digitValue(buffer[i]), digit < radix {
            let (times, o1) = value.multipliedReportingOverflow(by: radix)
            let (sum, o2) = times.addingReportingOverflow(digit)
            if o1 || o2 { return nil }
            value = sum
            i += 1
        }
        guard i > digitsStart else { return nil }
        if i < end && buffer[i] == UInt8(ascii: "\n") { i += 1 }
        return i == end ? value : nil
    }

    /// `kstrtobool`: 1/y/Y/t/T and "on" are true, 0/n/N/f/F and "off"
    /// false, judged by the first one or two characters; nil otherwise.
    public static func bool(_ buffer: UnsafeRawBufferPointer) -> Bool? {
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        guard end > 0 else { return nil }
        switch buffer[0] {
        case UInt8(ascii: "y"), UInt8(ascii: "Y"), UInt8(ascii: "t"), UInt8(ascii: "T"), UInt8(ascii: "1"): return true
        case UInt8(ascii: "n"), UInt8(ascii: "N"), UInt8(ascii: "f"), UInt8(ascii: "F"), UInt8(ascii: "0"): return false
        case UInt8(ascii: "o"), UInt8(ascii: "O"):
            guard end > 1 else { return nil }
            switch buffer[1] | 0x20 {
            case UInt8(ascii: "n"): return true
            case UInt8(ascii: "f"): return false
            default: return nil
            }
        default: return nil
        }
    }

    /// `sscanf(buf, "%x %x ...")` with up to `limit` conversions: the
    /// leading fields that parse as hexadecimal (optional `0x`), separated
    /// by white space; parsing stops at the first one that does not.
    public static func hexFields(_ buffer: UnsafeRawBufferPointer, limit: Int) -> [UInt64] {
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        let text = String(decoding: buffer[0..<end], as: UTF8.self)
        var fields: [UInt64] = []
        for word in text.split(whereSeparator: \.isWhitespace).prefix(limit) {
            var digits = Substring(word)
            if digits.lowercased().hasPrefix("0x") { digits = digits.dropFirst(2) }
            let hex = digits.prefix { $0.isHexDigit }
            guard !hex.isEmpty, let value = UInt64(hex, radix: 16) else { break }
            fields.append(value)
            if hex.count != digits.count { break }
        }
        return fields
    }

    /// `kstrtobool` on a string (a kernel command-line value).
    public static func bool(_ text: String) -> Bool? {
        Array(text.utf8).withUnsafeBytes { bool($0) }
    }

    private static func digitValue(_ c: UInt8) -> UInt64? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt64(c - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
