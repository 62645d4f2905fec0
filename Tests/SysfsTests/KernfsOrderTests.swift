@testable import Sysfs
import Synchronization
import Testing

/// kernfs lists a directory in (hash, name) order. The expected orders are
/// getdents orders printed by Linux 6.12 and 6.1 (Tests/IntegrationTests/Fixtures/oracle).
@Suite("kernfs listing order") struct KernfsOrderTests {
    /// `readdir ... order=` lines of the transcripts.
    static let transcriptOrders: [[String]] = [
        "7,15,5,13,3,11,1,8,6,14,4,12,2,10,0,9",
        "devices,type,reserved_regions",
        "0000:07:00.0,0000:00:06.0",
        "0000:00:1f.2,0000:00:1f.0,0000:00:1f.3",
        "0000:05:02.0,0000:05:01.0,0000:04:00.0",
        "uevent,power,devices,intel-iommu,subsystem",
        "cap,address,ecap,domains_used,version,domains_supported",
        "runtime_active_time,runtime_active_kids,runtime_usage,runtime_status,autosuspend_delay_ms,async,runtime_suspended_time,runtime_enabled,control",
        "0000:03:00.0,0000:00:1f.2,0000:00:08.0,0000:05:02.0,0000:00:1f.0,0000:02:00.0,0000:00:01.0,0000:08:00.0,0000:00:04.0,0000:01:00.0,0000:00:07.0,0000:07:00.0,0000:05:01.0,0000:00:1f.3,0000:00:00.0,0000:06:00.0,0000:00:03.0,0000:00:06.0,0000:04:00.0,0000:00:02.0,0000:00:05.0,0000:06:00.1",
    ].map { $0.split(separator: ",").map(String.init) }

    @Test("kernfs_name_hash values", arguments: [
        ("0", UInt32(1_948_804_525)), ("1", 772_060_710), ("devices", 698_066_606), ("type", 1_057_188_294),
        ("reserved_regions", 1_207_814_431), ("0000:00:00.0", 1_030_173_350),
    ])
    func hashValues(name: String, hash: UInt32) {
        #expect(KernfsHash.of(name) == hash)
    }

    @Test("hashes are 31-bit and skip the values of \".\", \"..\" and INT_MAX")
    func hashRange() {
        for name in ["", "a", "\u{7f}", "é", String(repeating: "x", count: 300)] {
            let hash = KernfsHash.of(name)
            #expect(hash >= 2 && hash < UInt32(Int32.max))
        }
    }

    private func listing(_ dir: Node) -> [String] {
        var names: [String] = []
        dir.directory!.forEachEntry(after: 0) { names.append($0.name); return true }
        return names
    }

    @Test("entries added one by one list in the kernel's order", arguments: transcriptOrders)
    func insertedOrder(expected: [String]) {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("d")
        for name in expected.sorted() { tree.makeSymlink(name, in: dir, to: "x") }
        #expect(listing(dir) == expected)
    }

    @Test("a lazy population lists in the kernel's order", arguments: transcriptOrders)
    func populatedOrder(expected: [String]) {
        let tree = SysfsTree()
        let dir = tree.makeDirectories("d")
        dir.directory!.populateLazily(resolve: { name in
            if expected.contains(name) { tree.makeSymlink(name, in: dir, to: "x") }
        }, { for name in expected.reversed() { tree.makeSymlink(name, in: dir, to: "x") } })
        // A lookup before the listing makes one entry out of order.
        #expect(dir.directory!.child(named: expected.last!) != nil)
        #expect(listing(dir) == expected)
        tree.remove(dir.directory!.child(named: expected[0])!)
        #expect(listing(dir) == Array(expected.dropFirst()))
    }

    @Test("names with the same hash list by name, and resume after each other")
    func collisions() throws {
        // 3-character names: about 420,000 of them, so some 31-bit hashes repeat.
        var seen: [UInt32: String] = [:]
        var pair: (String, String)?
        outer: for a in UInt8(ascii: "0")...UInt8(ascii: "z") {
            for b in UInt8(ascii: "0")...UInt8(ascii: "z") {
                for c in UInt8(ascii: "0")...UInt8(ascii: "z") {
                    let name = String(decoding: [a, b, c], as: UTF8.self)
                    let hash = KernfsHash.of(name)
                    if let other = seen[hash] { pair = (other, name); break outer }
                    seen[hash] = name
                }
            }
        }
        let (first, second) = try #require(pair)
        let tree = SysfsTree()
        let dir = tree.makeDirectories("d")
        let later = tree.makeSymlink(second, in: dir, to: "x")
        let earlier = tree.makeSymlink(first, in: dir, to: "x")
        #expect(listing(dir) == [first, second].sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
        var after: [String] = []
        let resume = first.utf8.lexicographicallyPrecedes(second.utf8) ? earlier : later
        dir.directory!.forEachEntry(after: resume.position) { after.append($0.name); return true }
        #expect(after == [resume === earlier ? second : first])
    }
}

@Suite("synthetic uevents") struct UeventTests {
    @Test("kobject_synth_uevent accepts an action, a UUID and alphanumeric KEY=VALUE pairs", arguments: [
        ("add", nil), ("change\n", nil), ("unbind\0", nil), ("add\0junk", "unknown uevent action string"),
        ("add 12345678-1234-1234-1234-123456789abc", nil),
        ("add 12345678-1234-1234-1234-123456789abc A=1 b2=x\n", nil),
        ("", "unknown uevent action string"), ("\n", "unknown uevent action string"),
        ("ad", "unknown uevent action string"), ("adds", "unknown uevent action string"),
        ("add ", "incorrect uevent action arguments"),
        ("add 12345678-1234-1234-1234-123456789abz", "incorrect uevent action arguments"),
        ("add 12345678-1234-1234-1234-123456789abc A=", "incorrect uevent action arguments"),
        ("add 12345678-1234-1234-1234-123456789abc A-B=1", "incorrect uevent action arguments"),
        ("add 12345678-1234-1234-1234-123456789abc\n\n", "incorrect uevent action arguments"),
    ] as [(String, String?)])
    func synthUevent(text: String, problem: String?) {
        #expect(Uevent.problem(Array(text.utf8)) == problem)
    }
}
