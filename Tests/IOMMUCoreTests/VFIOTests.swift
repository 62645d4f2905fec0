import IOMMUCore
import SystemPackage
import Testing

/// The legacy VFIO user's state machine (drivers/vfio/container.c, group.c,
/// vfio_iommu_type1.c) on the oracle machine: the transcripts' `vfiohold`
/// steps and the errors around them.
@Suite("VFIO container and group files")
struct VFIOTests {
    static let nic = Oracle612.nic
    static let msiWindow: UInt64 = 0xfee0_0000

    /// The oracle machine with `addresses` moved to vfio-pci.
    static func machine(vfio addresses: [String]) throws -> Machine {
        let machine = try Oracle612.machine()
        for address in addresses {
            try machine.unbind(address)
            #expect(try machine.bind(address, to: "vfio-pci") == nil)
        }
        return machine
    }

    @Test("vfiohold on the singleton: every step in the transcript's order, then the release gives the default domain back")
    func singletonHold() throws {
        let machine = try Self.machine(vfio: [Self.nic])
        let group = try machine.group(of: Self.nic)
        let address = try machine.device(Self.nic).address
        #expect(machine.openVFIOContainer("c") == nil)
        #expect(machine.vfioAPIVersion(of: "c") == .success(0))
        #expect(machine.vfioCheckExtension(.type1v2, of: "c") == .success(1))
        #expect(machine.openVFIOGroup(group) == nil)
        #expect(machine.vfioGroupStatus(group) == .success(VFIOGroupStatus(viable: true, containerSet: false)))
        #expect(machine.attachVFIOGroup(group, to: "c") == nil)
        #expect(machine.vfioGroupStatus(group) == .success(VFIOGroupStatus(viable: true, containerSet: true)))
        #expect(group.snapshot.owner != nil && group.snapshot.attachedDomainType == .blocked)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == nil)
        #expect(group.snapshot.attachedDomainType == .unmanaged)
        #expect(machine.mapVFIODMA("c", iova: 0, size: 4096) == nil)
        #expect(machine.openVFIODevice(address, in: group) == nil)
        #expect(machine.vfioContainer(of: group) == "c")

        #expect(machine.releaseVFIOGroup(group) == nil)
        #expect(group.snapshot.owner == nil && group.snapshot.isOnDefaultDomain)
        #expect(machine.vfioContainer(of: group) == nil)
        // The container is still open, deprivileged: no backend, no mappings.
        #expect(machine.mapVFIODMA("c", iova: 0, size: 4096) == .invalidArgument)
        #expect(machine.closeVFIOContainer("c") == nil)
        #expect(machine.closeVFIOContainer("c") == .badFileDescriptor)
        #expect(machine.vfioAPIVersion(of: "c") == .failure(.badFileDescriptor))
    }

    @Test("the bridge group with one endpoint still on e1000: not viable, SET_CONTAINER gets EPERM and changes nothing")
    func partialBridgeGroup() throws {
        let machine = try Self.machine(vfio: ["0000:05:01.0"])
        let group = try machine.group(of: "0000:05:01.0")
        #expect(machine.openVFIOContainer("c") == nil)
        #expect(machine.openVFIOGroup(group) == nil)
        #expect(machine.vfioGroupStatus(group) == .success(VFIOGroupStatus(viable: false, containerSet: false)))
        #expect(machine.attachVFIOGroup(group, to: "c") == .notPermitted)
        #expect(group.snapshot.owner == nil && group.snapshot.ownerCount == 1 && group.snapshot.isOnDefaultDomain)
        #expect(machine.vfioGroupStatus(group) == .success(VFIOGroupStatus(viable: false, containerSet: false)))
        // The container has no group: it cannot take a backend.
        #expect(machine.setVFIOIOMMU("c", .type1v2) == .invalidArgument)
        // e1000's device is no VFIO device of the group; vfio-pci's has no container yet.
        #expect(machine.openVFIODevice(try machine.device("0000:05:02.0").address, in: group) == .noDevice)
        #expect(machine.openVFIODevice(try machine.device("0000:05:01.0").address, in: group) == .invalidArgument)
        #expect(machine.releaseVFIOGroup(group) == nil)
        #expect(group.snapshot.ownerCount == 1)
    }

    @Test("the group's file: ENOENT without a vfio-pci member, one open at a time, ioctls need it open")
    func groupFile() throws {
        let machine = try Oracle612.machine()
        let group = try machine.group(of: Self.nic)
        #expect(machine.openVFIOGroup(group) == .noSuchFileOrDirectory)
        #expect(machine.vfioGroupStatus(group) == .failure(.badFileDescriptor))
        #expect(machine.releaseVFIOGroup(group) == .badFileDescriptor)
        try machine.unbind(Self.nic)
        #expect(machine.openVFIOGroup(group) == .noSuchFileOrDirectory)
        #expect(try machine.bind(Self.nic, to: "vfio-pci") == nil)
        #expect(machine.openVFIOGroup(group) == nil)
        #expect(machine.openVFIOGroup(group) == .resourceBusy)
        #expect(machine.openVFIODevice(try machine.device(Self.nic).address, in: group) == .invalidArgument)
        #expect(machine.releaseVFIOGroup(group) == nil)
        #expect(machine.openVFIOGroup(group) == nil)
    }

    @Test("VFIO_CHECK_EXTENSION and VFIO_SET_IOMMU: type1 backends only; the backend is set once")
    func backends() throws {
        let machine = try Self.machine(vfio: [Self.nic])
        let group = try machine.group(of: Self.nic)
        #expect(machine.openVFIOContainer("c") == nil)
        #expect(machine.openVFIOContainer("c") == .fileExists)
        let supported = VFIOExtension.allCases.filter { machine.vfioCheckExtension($0, of: "c") == .success(1) }
        #expect(supported == [.type1, .type1v2, .unmapAll, .updateVaddr])
        #expect(machine.vfioCheckExtension(.type1, of: "nothing") == .failure(.badFileDescriptor))
        #expect(machine.attachVFIOGroup(group, to: "c") == nil)
        #expect(machine.mapVFIODMA("c", iova: 0, size: 4096) == .invalidArgument)
        #expect(machine.setVFIOIOMMU("c", .noIOMMU) == .noDevice)
        #expect(machine.setVFIOIOMMU("c", .unmapAll) == .invalidArgument)
        #expect(group.snapshot.attachedDomainType == .blocked)
        #expect(machine.setVFIOIOMMU("c", .type1) == nil)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == .invalidArgument)
    }

    @Test("VFIO_IOMMU_MAP_DMA: page-aligned, non-empty, not wrapping, clear of the MSI window and of other mappings",
          arguments: [(UInt64(0x1000), UInt64(0x1000), Errno?.none), (0x4000, 0, .invalidArgument),
                      (0x1800, 0x1000, .invalidArgument), (0x1000, 0x800, .invalidArgument),
                      (UInt64.max - 0xfff, 0x2000, .invalidArgument), (msiWindow, 0x1000, .invalidArgument),
                      (msiWindow - 0x1000, 0x2000, .invalidArgument), (0x1000, 0x2000, .fileExists),
                      (0x2000, 0x1000, .fileExists), (0x3000, 0x1000, nil)])
    func mapDMA(iova: UInt64, size: UInt64, expected: Errno?) throws {
        let machine = try Self.machine(vfio: [Self.nic])
        #expect(machine.openVFIOContainer("c") == nil)
        #expect(machine.attachVFIOGroup(try machine.group(of: Self.nic), to: "c") == nil)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == nil)
        #expect(machine.mapVFIODMA("c", iova: 0x2000, size: 0x1000) == nil)
        #expect(machine.mapVFIODMA("c", iova: iova, size: size) == expected)
    }

    @Test("a group with a reserved region under a mapping cannot join the container (vfio_iommu_resv_conflict)")
    func reservedRegionConflict() throws {
        let reserved = ReservedRegion.span(0x10_0000, 0x10_0fff, .reserved)
        let machine = try Machine.boot([TestDevice("0000:00:03.0", group: "a", driver: "vfio-pci"),
                                        TestDevice("0000:00:04.0", group: "b", driver: "vfio-pci", regions: [reserved, .msiWindow])])
        let a = try machine.group(of: "0000:00:03.0"), b = try machine.group(of: "0000:00:04.0")
        #expect(machine.openVFIOContainer("c") == nil)
        #expect(machine.attachVFIOGroup(a, to: "c") == nil)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == nil)
        #expect(machine.mapVFIODMA("c", iova: 0x10_0000, size: 0x1000) == nil)
        #expect(machine.attachVFIOGroup(b, to: "c") == .invalidArgument)
        #expect(b.snapshot.owner == nil && b.snapshot.isOnDefaultDomain)
        #expect(machine.vfioContainer(of: b) == nil)
        // Once b is in, its region is closed to new mappings.
        #expect(machine.detachVFIOGroup(a) == nil)
        #expect(machine.attachVFIOGroup(b, to: "c") == nil)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == nil)
        #expect(machine.mapVFIODMA("c", iova: 0x10_0000, size: 0x1000) == .invalidArgument)
    }

    @Test("two groups share the container's domain; UNSET_CONTAINER is EBUSY while a device is open; the last group deprivileges")
    func sharedContainer() throws {
        let machine = try Self.machine(vfio: [Self.nic, "0000:08:00.0"])
        let nicGroup = try machine.group(of: Self.nic), edu = try machine.group(of: "0000:08:00.0")
        #expect(machine.openVFIOContainer("c") == nil)
        #expect(machine.openVFIOGroup(nicGroup) == nil)
        #expect(machine.attachVFIOGroup(nicGroup, to: "c") == nil)
        #expect(machine.attachVFIOGroup(edu, to: "c") == nil)
        #expect(machine.attachVFIOGroup(edu, to: "c") == .invalidArgument)
        #expect(!machine.shareVFIODomain(nicGroup, edu))
        #expect(machine.setVFIOIOMMU("c", .type1v2) == nil)
        #expect(machine.shareVFIODomain(nicGroup, edu))
        #expect(machine.openVFIODevice(try machine.device(Self.nic).address, in: nicGroup) == nil)
        #expect(machine.openVFIODevice(try machine.device(Self.nic).address, in: nicGroup) == nil)
        #expect(machine.detachVFIOGroup(nicGroup) == .resourceBusy)
        #expect(machine.detachVFIOGroup(edu) == nil)
        #expect(machine.detachVFIOGroup(edu) == .invalidArgument)
        #expect(edu.snapshot.isOnDefaultDomain && edu.snapshot.owner == nil)
        #expect(machine.mapVFIODMA("c", iova: 0, size: 0x1000) == nil)
        #expect(machine.releaseVFIOGroup(nicGroup) == nil)
        #expect(nicGroup.snapshot.isOnDefaultDomain)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == .invalidArgument)
        #expect(machine.attachVFIOGroup(edu, to: "c") == nil)
        // Deprivileged: a new group waits for VFIO_SET_IOMMU again, and the old mapping is gone.
        #expect(edu.snapshot.attachedDomainType == .blocked)
        #expect(machine.setVFIOIOMMU("c", .type1v2) == nil)
        #expect(machine.mapVFIODMA("c", iova: 0, size: 0x1000) == nil)
    }

    @Test("attach to a container nobody opened is a whole user: the backend is type1v2 at once, and the container goes with its last group")
    func implicitContainer() throws {
        let machine = try Oracle612.machine()
        let edu = try machine.group(of: "0000:08:00.0")
        #expect(machine.attachVFIOGroup(edu, to: "c") == nil)
        #expect(edu.snapshot.attachedDomainType == .unmanaged)
        #expect(machine.vfioContainer(of: edu) == "c")
        #expect(machine.closeVFIOContainer("c") == .badFileDescriptor)
        #expect(machine.detachVFIOGroup(edu) == nil)
        #expect(machine.openVFIOContainer("c") == nil)
    }
}
