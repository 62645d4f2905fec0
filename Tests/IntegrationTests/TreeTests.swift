import Foundation
import Glibc
import Testing

/// The tree of the default machine, checked with lstat/readlink/readdir
/// through a real mount.
@Suite("Mounted tree") struct TreeTests {
    @Test("iommu_groups lists the default machine's groups")
    func groupList() throws {
        try MountedMachine.with { m in
            let groups = Syscall.list(m.path("kernel/iommu_groups")).sorted { Int($0)! < Int($1)! }
            #expect(groups == (0...7).map(String.init))
            let dir = try #require(Syscall.lstat(m.path("kernel/iommu_groups")))
            #expect(dir.st_mode == S_IFDIR | 0o755)
            #expect(dir.st_nlink == 2 + 8)
            #expect(Set(Syscall.list(m.path("kernel/iommu_groups/6/devices")))
                    == ["0000:00:1e.0", "0000:05:00.0", "0000:05:01.0"])
        }
    }

    @Test("group entries have the kernel's modes, owners, sizes and link counts")
    func groupEntries() throws {
        try MountedMachine.with { m in
            for group in 0...7 {
                let base = m.path("kernel/iommu_groups/\(group)")
                #expect(Set(Syscall.list(base)) == ["devices", "reserved_regions", "type"])
                let dir = try #require(Syscall.lstat(base))
                #expect(dir.st_mode == S_IFDIR | 0o755 && dir.st_nlink == 3 && dir.st_size == 0)
                let devices = try #require(Syscall.lstat(base + "/devices"))
                #expect(devices.st_mode == S_IFDIR | 0o755 && devices.st_nlink == 2)
                let type = try #require(Syscall.lstat(base + "/type"))
                #expect(type.st_mode == S_IFREG | 0o644)
                #expect(type.st_size == 4096 && type.st_uid == 0 && type.st_gid == 0 && type.st_nlink == 1)
                let regions = try #require(Syscall.lstat(base + "/reserved_regions"))
                #expect(regions.st_mode == S_IFREG | 0o444 && regions.st_size == 4096)
            }
        }
    }

    @Test("symlink targets are the kernel's relative paths", arguments: [
        ("kernel/iommu_groups/3/devices/0000:02:00.0", "../../../../devices/pci0000:00/0000:00:1c.0/0000:02:00.0"),
        ("kernel/iommu_groups/0/devices/0000:00:00.0", "../../../../devices/pci0000:00/0000:00:00.0"),
        ("devices/pci0000:00/0000:00:00.0/iommu_group", "../../../kernel/iommu_groups/0"),
        ("devices/pci0000:00/0000:00:1c.0/0000:02:00.0/iommu_group", "../../../../kernel/iommu_groups/3"),
        ("devices/pci0000:00/0000:00:14.0/iommu", "../../virtual/iommu/dmar0"),
        ("devices/pci0000:00/0000:00:1c.0/0000:02:00.0/iommu", "../../../virtual/iommu/dmar0"),
        ("class/iommu/dmar0", "../../devices/virtual/iommu/dmar0"),
        ("devices/virtual/iommu/dmar0/devices/0000:00:14.0", "../../../../pci0000:00/0000:00:14.0"),
        ("devices/virtual/iommu/dmar0/devices/0000:02:00.0", "../../../../pci0000:00/0000:00:1c.0/0000:02:00.0"),
        ("bus/pci/devices/0000:02:00.0", "../../../devices/pci0000:00/0000:00:1c.0/0000:02:00.0"),
        ("devices/pci0000:00/0000:00:1c.0/0000:02:00.0/driver", "../../../../bus/pci/drivers/nvme"),
        ("bus/pci/drivers/nvme/0000:02:00.0", "../../../../devices/pci0000:00/0000:00:1c.0/0000:02:00.0"),
    ])
    func linkTargets(link: String, target: String) throws {
        try MountedMachine.with { m in
            #expect(Syscall.readlink(m.path(link)) == target)
            let st = try #require(Syscall.lstat(m.path(link)))
            #expect(st.st_mode == S_IFLNK | 0o777 && st.st_size == 0)
        }
    }

    @Test("every node has sysfs' shape and every link resolves inside the mount")
    func wholeTree() throws {
        try MountedMachine.with { m in
            var links = 0, files = 0, dirs = 0
            func walk(_ path: String) throws {
                let st = try #require(Syscall.lstat(path), "lstat \(path)")
                #expect(st.st_uid == 0 && st.st_gid == 0, "\(path)")
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    dirs += 1
                    let entries = Syscall.list(path)
                    let subdirectories = entries.filter { Syscall.lstat(path + "/" + $0).map { $0.st_mode & S_IFMT == S_IFDIR } ?? false }
                    #expect(st.st_nlink == 2 + subdirectories.count, "\(path) nlink")
                    #expect(st.st_mode & 0o7777 == 0o755 && st.st_size == 0, "\(path)")
                    for entry in entries { try walk(path + "/" + entry) }
                case S_IFREG:
                    files += 1
                    // A binary attribute's size is its own: `config` is cfg_size (256 conventional, 4096 PCIe).
                    let size = path.hasSuffix("/config") ? (Syscall.bytes(path)?.count ?? -1) : 4096
                    #expect(st.st_size == size && st.st_nlink == 1, "\(path)")
                    #expect([0o444, 0o644, 0o200, 0o220].contains(st.st_mode & 0o7777), "\(path) mode")
                case S_IFLNK:
                    links += 1
                    let target = try #require(Syscall.readlink(path), "readlink \(path)")
                    let resolved = URL(fileURLWithPath: (path as NSString).deletingLastPathComponent)
                        .appendingPathComponent(target).standardized.path
                    #expect(resolved.hasPrefix(m.root + "/"), "\(path) → \(target) leaves the mount")
                    #expect(Syscall.lstat(resolved) != nil, "\(path) → \(target) dangles")
                default:
                    Issue.record("\(path): unexpected file type")
                }
            }
            try walk(m.root)
            #expect(dirs > 20 && files > 40 && links > 60)
        }
    }
}
