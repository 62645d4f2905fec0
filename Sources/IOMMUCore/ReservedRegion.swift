/// An `iommu_resv_region`: an IOVA range a domain must not hand out.
public struct ReservedRegion: Hashable, Sendable {
    /// `enum iommu_resv_type`, in the kernel's order (used to break ties).
    public enum Kind: Int, Comparable, Sendable, CaseIterable {
        case direct = 0
        case directRelaxable = 1
        case reserved = 2
        case msi = 3
        case softwareMSI = 4

        /// The name `reserved_regions` prints (`iommu_resv_type_names`).
        public var sysfsName: String {
            switch self {
            case .direct: "direct"
            case .directRelaxable: "direct-relaxable"
            case .reserved: "reserved"
            case .msi, .softwareMSI: "msi"
            }
        }

        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
    }

    public var start: UInt64
    public var length: UInt64
    public var kind: Kind

    public init(start: UInt64, length: UInt64, kind: Kind) {
        precondition(length > 0, "a reserved region is never empty")
        self.start = start
        self.length = length
        self.kind = kind
    }

    /// Inclusive end, as printed.
    public var end: UInt64 { start &+ (length - 1) }

    /// One line of `reserved_regions`: `0x%016llx 0x%016llx %s\n`.
    public var sysfsLine: String {
        "0x" + hexDigits(start, 16) + " 0x" + hexDigits(end, 16) + " " + kind.sysfsName + "\n"
    }

    /// `iommu_insert_resv_region`: inserts `new` into `regions`, which is
    /// sorted by start (ties: lower kind first), then merges regions of the
    /// new region's kind that overlap or touch. Regions of other kinds are
    /// never merged, even when they overlap.
    public static func insert(_ new: ReservedRegion, into regions: inout [ReservedRegion]) {
        let position = regions.firstIndex {
            new.start < $0.start || (new.start == $0.start && new.kind <= $0.kind)
        } ?? regions.endIndex
        regions.insert(new, at: position)

        var stack: [ReservedRegion] = []
        for region in regions {
            guard region.kind == new.kind,
                  let top = stack.lastIndex(where: { $0.kind == region.kind }) else {
                stack.append(region)
                continue
            }
            let topEnd = stack[top].end
            if region.start > topEnd &+ 1 {
                stack.append(region)
            } else {
                stack[top].length = max(topEnd, region.end) - stack[top].start + 1
            }
        }
        regions = stack
    }
}
