import TestSupport

/// The words of one machine that stores take: its device addresses, driver
/// names and group ids, as the mount lists them (kept once seen, so that a
/// removed device's address stays a payload).
struct FuzzVocabulary {
    private(set) var addresses: [String] = []
    private(set) var drivers: [String] = []
    private(set) var groups: [String] = []

    /// Adds what the mount lists now.
    mutating func learn(from m: MountedMachine) {
        addresses = Self.union(addresses, Syscall.list(m.path("bus/pci/devices")))
        drivers = Self.union(drivers, Syscall.list(m.path("bus/pci/drivers")))
        groups = Self.union(groups, Syscall.list(m.path("kernel/iommu_groups")))
    }

    private static func union(_ known: [String], _ listed: [String]) -> [String] {
        known + listed.filter { !known.contains($0) }.sorted()
    }
}

/// Seeded payloads for sysfs stores: edge cases, the machine's own words
/// (exact, padded, or bent), numbers in every spelling, invalid UTF-8 and
/// raw bytes.
enum FuzzPayload {
    /// Sizes around a page: kernfs hands a store at most 4096 bytes.
    static let edgeCases: [[UInt8]] = [
        [], [0x0a], [0], [0, 0x0a], Array("1\u{0}".utf8), Array("\u{0}1".utf8), Array("1\u{0}garbage".utf8),
        Array(repeating: UInt8(ascii: "1"), count: 4095), Array(repeating: UInt8(ascii: "1"), count: 4096),
        Array(repeating: UInt8(ascii: "1"), count: 4097), Array(repeating: UInt8(ascii: "a"), count: 5000),
        Array(repeating: 0x0a, count: 4096), Array(repeating: 0, count: 4097),
    ]

    static let typeNames = ["identity", "DMA", "DMA-FQ", "auto", "blocked", "unmanaged", "dma", "Identity", "DMA-", "DMA-FQ-FQ", "none"]

    /// What the other knobs take: reset methods, power controls, new_id lines, driver_override values.
    static let knobWords = [
        "flr", "bus", "pm", "acpi", "device_specific", "cxl_bus", "default", "flr bus", "bus,flr", "pm pm",
        "on", "auto", "enabled", "disabled", "vfio-pci", "pci-stub", "pcieport", "(null)",
        "8086 10d3", "1b36 0010", "1af4 1041 ffffffff ffffffff 20000 ffff00", "8086", "8086 10d3 0 0 0 0 0",
        "ffffffff ffffffff", "zzzz 0010",
    ]

    static let numbers = [
        "0", "1", "2", "3", "4", "7", "8", "16", "64", "255", "256", "65535", "-1", "-0", "+1", "00", "01",
        "0x0", "0x1", "0X10", "0xffffffff", "010", "0b1", "0o7", "1e3", "1.5", "2147483647", "2147483648",
        "-2147483648", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "18446744073709551615", "18446744073709551616", "99999999999999999999999999999999",
        "0x", "-", "+", "1 2", "1,2", "y", "n", "Y", "N", "yes", "no", "true", "false", "1x",
    ]

    static let invalidUTF8: [[UInt8]] = [
        [0xff], [0xfe, 0xff], [0xc0, 0x80], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0x80],
        [0xf8, 0x88, 0x80, 0x80, 0x80], [0xef, 0xbb, 0xbf],
    ]

    static let whitespace = [" ", "\t", "\n", "\r", "\u{0B}", "\u{0C}", "\r\n", "  ", "\n\n", " \n", "\t\n"]

    /// One payload.
    static func next(_ random: inout SplitMix64, _ words: FuzzVocabulary) -> [UInt8] {
        switch random.next() % 100 {
        case 0..<12: return random.pick(edgeCases)
        case 12..<42: return decorated(word(&random, words), &random)
        case 42..<55: return decorated(Array(random.pick(numbers).utf8), &random)
        case 55..<67: return mutated(word(&random, words), &random)
        case 67..<74: return spliced(word(&random, words), random.pick(invalidUTF8), &random)
        case 74..<82:
            let separator = random.pick([" ", "\n", ",", "\u{0}", "\t", ""])
            return word(&random, words) + Array(separator.utf8) + word(&random, words)
        case 82..<91: return (0..<(1 + random.next() % 80)).map { _ in UInt8(0x20 + random.next() % 95) }
        default: return (0..<(random.next() % 300)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        }
    }

    /// A word of the machine or of its knobs; an address as written in full
    /// or short, in either case.
    private static func word(_ random: inout SplitMix64, _ words: FuzzVocabulary) -> [UInt8] {
        let text: String
        switch random.next() % 10 {
        case 0..<4 where !words.addresses.isEmpty:
            let address = random.pick(words.addresses)
            switch random.next() % 4 {
            case 0: text = String(address.dropFirst(5))
            case 1: text = address.uppercased()
            default: text = address
            }
        case 4..<6 where !words.drivers.isEmpty: text = random.pick(words.drivers)
        case 6: text = random.pick(typeNames)
        case 7 where !words.groups.isEmpty: text = random.pick(words.groups)
        default: text = random.pick(knobWords)
        }
        return Array(text.utf8)
    }

    /// Whitespace before and after (a newline, as `echo` writes it, most often).
    private static func decorated(_ word: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        let before = random.next() % 6 == 0 ? Array(random.pick(whitespace).utf8) : []
        let after: [UInt8] = switch random.next() % 4 {
        case 0: []
        case 1: Array(random.pick(whitespace).utf8)
        default: [0x0a]
        }
        return before + word + after
    }

    /// The word with a byte flipped, inserted, dropped or doubled, cut short, or repeated.
    private static func mutated(_ word: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        guard !word.isEmpty else { return [UInt8(truncatingIfNeeded: random.next())] }
        var bytes = word
        let at = Int(random.next() % UInt64(bytes.count))
        switch random.next() % 6 {
        case 0: bytes[at] ^= UInt8(1 << (random.next() % 8))
        case 1: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: at)
        case 2: bytes.remove(at: at)
        case 3: bytes.insert(bytes[at], at: at)
        case 4: bytes = Array(bytes[..<at])
        default: bytes = Array([[UInt8]](repeating: bytes + [0x20], count: Int(2 + random.next() % 60)).joined())
        }
        return bytes
    }

    /// `bytes` inserted into the word, or in place of its end.
    private static func spliced(_ word: [UInt8], _ bytes: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        let at = Int(random.next() % UInt64(word.count + 1))
        return Array(word[..<at]) + bytes + (random.next() % 2 == 0 ? Array(word[at...]) : [0x0a])
    }

    /// A payload for a binary attribute (`config`): raw bytes.
    static func binary(_ random: inout SplitMix64) -> [UInt8] {
        (0..<(random.next() % 64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    }
}
