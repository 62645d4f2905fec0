/// The kernel version whose behaviour a machine reproduces.
///
/// The logic consults the profile where kernels differ instead of forking
/// whole functions, so older or newer kernels are added as data. Only
/// differences the logic implements are listed.
public struct KernelProfile: Sendable, Equatable, CustomStringConvertible {
    public var name: String

    /// v6.7+ (b85b4f30846b) returns the allocator's errno when a default
    /// domain of the requested type cannot be allocated; v6.5–v6.6 always
    /// returned ENODEV.
    public var returnsAllocatorErrno: Bool

    /// v7.0+ (c279e83953d9, v7.1 fixes): a PCI reset of an ATS device parks
    /// its RID on the blocking domain, and every domain change of its group
    /// gets EBUSY until the reset is done (§7).
    public var fencesResets: Bool

    public var description: String { name }

    /// Linux 6.12, the kernel the first oracle transcript was printed by.
    public static let linux6_12 = KernelProfile(name: "linux-6.12", returnsAllocatorErrno: true, fencesResets: false)

    /// Linux 7.1: 6.12's store path plus reset fencing with nested resets.
    public static let linux7_1 = KernelProfile(name: "linux-7.1", returnsAllocatorErrno: true, fencesResets: true)

    /// The behaviour new machines get.
    public static let current = linux7_1

    public static let all: [KernelProfile] = [.linux6_12, .linux7_1]

    public static func named(_ name: String) -> KernelProfile? { all.first { $0.name == name } }
}
