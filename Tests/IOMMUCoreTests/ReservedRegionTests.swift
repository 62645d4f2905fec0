import IOMMUCore
import Testing

/// §2 `reserved_regions`: `iommu_insert_resv_region` over every member's
/// regions, printed as `0x%016llx 0x%016llx %s\n`.
@Suite("reserved_regions (§2)")
struct ReservedRegionTests {
    /// The text of a group whose members report `regions`, one list per member.
    static func text(_ regions: [[ReservedRegion]]) throws -> String {
        let devices = regions.enumerated().map { index, list in
            TestDevice("0000:00:1f.\(index)", group: "g", regions: list)
        }
        return try Machine.boot(devices).group(of: "0000:00:1f.0").reservedRegionsText
    }

    /// The same regions reported by one device, and spread one per device:
    /// the result must not depend on who reports what.
    static func layouts(_ regions: [ReservedRegion]) -> [[[ReservedRegion]]] {
        [[regions], regions.map { [$0] }, regions.reversed().map { [$0] }]
    }

    static func expectText(_ regions: [ReservedRegion], _ expected: String,
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        for layout in layouts(regions) {
            #expect(try text(layout) == expected, sourceLocation: sourceLocation)
        }
    }

    @Test("§14.9 the MSI window: one line, 18-character lowercase hex fields, inclusive end")
    func case9() throws {
        try Self.expectText([.msiWindow], "0x00000000fee00000 0x00000000feefffff msi\n")
    }

    @Test("§14.10 two members reporting the same MSI window print exactly one line")
    func case10() throws {
        #expect(try Self.text([[.msiWindow], [.msiWindow]]) == "0x00000000fee00000 0x00000000feefffff msi\n")
    }

    @Test("§14.11 adjacent regions of one type merge into one line")
    func case11Adjacent() throws {
        try Self.expectText([.span(0x1000, 0x1fff, .direct), .span(0x2000, 0x2fff, .direct)],
                            "0x0000000000001000 0x0000000000002fff direct\n")
    }

    @Test("§14.11 an overlapping region of another type stays its own line, sorted by start")
    func case11OtherType() throws {
        try Self.expectText([.span(0x1000, 0x2fff, .direct), .span(0x1800, 0x18ff, .reserved)],
                            "0x0000000000001000 0x0000000000002fff direct\n0x0000000000001800 0x00000000000018ff reserved\n")
    }

    @Test("§14.12 equal starts: the lower type (direct) is listed before msi")
    func case12() throws {
        try Self.expectText([.span(0xfee0_0000, 0xfeef_ffff, .msi), .span(0xfee0_0000, 0xfee0_0fff, .direct)],
                            "0x00000000fee00000 0x00000000fee00fff direct\n0x00000000fee00000 0x00000000feefffff msi\n")
    }

    @Test("same-type merges keep the lower start and the larger end (overlap and containment)",
          arguments: [
              ([ReservedRegion.span(0x1000, 0x4fff, .reserved), .span(0x2000, 0x2fff, .reserved)],
               "0x0000000000001000 0x0000000000004fff reserved\n"),
              ([.span(0x1000, 0x2fff, .reserved), .span(0x2800, 0x5fff, .reserved), .span(0x6000, 0x6fff, .reserved)],
               "0x0000000000001000 0x0000000000006fff reserved\n"),
          ])
    func sameTypeMerge(regions: [ReservedRegion], expected: String) throws {
        try Self.expectText(regions, expected)
    }

    @Test("a one-byte gap keeps same-type regions apart")
    func gapDoesNotMerge() throws {
        try Self.expectText([.span(0x1000, 0x1fff, .direct), .span(0x2001, 0x2fff, .direct)],
                            "0x0000000000001000 0x0000000000001fff direct\n0x0000000000002001 0x0000000000002fff direct\n")
    }

    @Test("different types never merge, even overlapping or adjacent (MSI vs SW_MSI both print `msi`)",
          arguments: [
              ([ReservedRegion.span(0x800_0000, 0x80f_ffff, .softwareMSI), .msiWindow.withStart(0x800_0000)],
               "0x0000000008000000 0x00000000080fffff msi\n0x0000000008000000 0x00000000080fffff msi\n"),
              ([.span(0x1000, 0x1fff, .direct), .span(0x2000, 0x2fff, .directRelaxable)],
               "0x0000000000001000 0x0000000000001fff direct\n0x0000000000002000 0x0000000000002fff direct-relaxable\n"),
          ])
    func differentTypesNeverMerge(regions: [ReservedRegion], expected: String) throws {
        try Self.expectText(regions, expected)
    }

    @Test("same-type regions merge across an interleaved region of another type")
    func mergeAcrossOtherType() throws {
        try Self.expectText([.span(0x1000, 0x1fff, .direct), .span(0x1800, 0x18ff, .reserved), .span(0x1c00, 0x2fff, .direct)],
                            "0x0000000000001000 0x0000000000002fff direct\n0x0000000000001800 0x00000000000018ff reserved\n")
    }

    @Test("64-bit addresses print zero-padded lowercase, up to the last byte of the address space")
    func wideAddresses() throws {
        try Self.expectText([.span(0xfd_0000_0000, 0xff_ffff_ffff, .reserved), .span(0xffff_ffff_ffff_f000, .max, .reserved)],
                            "0x000000fd00000000 0x000000ffffffffff reserved\n0xfffffffffffff000 0xffffffffffffffff reserved\n")
    }

    @Test("oracle: the ICH9 group lists the ISA bridge's direct-relaxable window, then the shared MSI window")
    func oracleICH9() throws {
        let machine = try Oracle612.machine()
        #expect(try machine.group(of: "0000:00:1f.2").reservedRegionsText
            == "0x0000000000000000 0x0000000000ffffff direct-relaxable\n0x00000000fee00000 0x00000000feefffff msi\n")
        #expect(try machine.group(of: Oracle612.nic).reservedRegionsText
            == "0x00000000fee00000 0x00000000feefffff msi\n")
    }
}

extension ReservedRegion {
    func withStart(_ start: UInt64) -> ReservedRegion { ReservedRegion(start: start, length: length, kind: kind) }
}
