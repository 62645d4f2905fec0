import IOMMUCore
import Sysfs

/// A machine's sysfs tree as a walk sees it: its writable files, and what
/// must hold of it after any change (the view follows the model).
enum TreeChecks {
    /// Every node below the root with the path of its directory ("" for
    /// the root), parents before children, in listing order, populating
    /// lazy directories as a walk (`find`) does.
    static func walk(_ tree: SysfsTree, _ body: (_ directoryPath: String, _ node: Node) -> Void) {
        func visit(_ directory: Node, _ path: String) {
            for child in directory.directory?.snapshot() ?? [] {
                body(path, child)
                if child.directory != nil { visit(child, join(path, child.name)) }
            }
        }
        visit(tree.root, "")
    }

    /// The attributes a write can reach (a store and a write bit), in walk
    /// order, which is the same for the same tree.
    static func writableAttributes(_ tree: SysfsTree) -> [(path: String, node: Node)] {
        var found: [(path: String, node: Node)] = []
        walk(tree) { directory, node in
            if let attribute = node.attribute, attribute.isWritable, node.metadataSnapshot.permissions & 0o222 != 0 {
                found.append((join(directory, node.name), node))
            }
        }
        return found
    }

    /// Files that do not read (a page at most, or an errno from 1 to 511:
    /// FUSE replies with no other), links that lead nowhere, and listings
    /// that differ from the model: the groups, each group's members, the
    /// bus's devices, and each device's `iommu_group` and `driver` links.
    static func findings(_ view: MachineTree) -> [Finding] {
        let tree = view.tree
        let machine = view.machine
        var findings: [Finding] = []
        walk(tree) { directory, node in
            if let attribute = node.attribute, attribute.isReadable, node.metadataSnapshot.permissions & 0o444 != 0 {
                findings += readFindings(join(directory, node.name), node)
            }
            guard let target = node.symlink?.targetPath else { return }
            guard tree.node(atPath: target)?.directory != nil else {
                findings.append(Finding("the link \(join(directory, node.name)) points at \(target), which is not a directory of the tree"))
                return
            }
            if let relative = node.linkTarget, resolve(relative, from: directory) != target {
                findings.append(Finding("the link \(join(directory, node.name)) reads \(relative), which does not lead to \(target)"))
            }
        }
        let groups = machine.groups
        expect(listing(tree, "kernel/iommu_groups"), groups.map { String($0.id) }, "kernel/iommu_groups", &findings)
        for group in groups {
            expect(listing(tree, "kernel/iommu_groups/\(group.id)/devices"), group.snapshot.devices.map(\.description),
                   "kernel/iommu_groups/\(group.id)/devices", &findings)
        }
        let devices = machine.devices
        expect(listing(tree, "bus/pci/devices"), devices.map(\.address.description), "bus/pci/devices", &findings)
        for device in devices {
            let path = device.sysfsPath
            expect(tree.node(atPath: path + "/iommu_group")?.symlink?.targetPath, device.group.map { "kernel/iommu_groups/\($0.id)" },
                   path + "/iommu_group", &findings)
            expect(tree.node(atPath: path + "/driver")?.symlink?.targetPath, device.driver.map { "bus/pci/drivers/\($0.name)" },
                   path + "/driver", &findings)
        }
        return findings
    }

    private static func readFindings(_ path: String, _ node: Node) -> [Finding] {
        let result = OpenAttribute.open(node, forReading: true, forWriting: false).flatMap { file in
            file.read(offset: 0, size: Attribute.pageSize) { $0.count }
        }
        switch result {
        case .success(let count) where count > Attribute.pageSize:
            return [Finding("reading \(path) gave \(count) bytes, more than a page")]
        case .failure(let errno) where errno.rawValue <= 0 || errno.rawValue >= 512:
            return [Finding("reading \(path) failed with errno \(errno.rawValue), which no reader can receive")]
        default:
            return []
        }
    }

    /// The names in the directory at `path`, sorted; nil without one.
    private static func listing(_ tree: SysfsTree, _ path: String) -> [String]? {
        tree.node(atPath: path)?.directory?.snapshot().map(\.name).sorted()
    }

    private static func expect(_ listing: [String]?, _ model: [String], _ path: String, _ findings: inout [Finding]) {
        let expected = model.sorted()
        if listing != expected {
            findings.append(Finding("\(path) lists \(listing.map { "\($0)" } ?? "nothing (no such directory)"), the model has \(expected)"))
        }
    }

    private static func expect(_ link: String?, _ model: String?, _ path: String, _ findings: inout [Finding]) {
        if link != model {
            findings.append(Finding("\(path) points at \(link ?? "nothing (no link)"), the model at \(model ?? "nothing")"))
        }
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.isEmpty ? name : directory + "/" + name
    }

    /// `relative` (with `..` steps) from the directory `base`, as a path
    /// from the root.
    private static func resolve(_ relative: String, from base: String) -> String {
        var components = base.split(separator: "/").map(String.init)
        for step in relative.split(separator: "/") {
            if step == ".." {
                if !components.isEmpty { components.removeLast() }
            } else if step != "." {
                components.append(String(step))
            }
        }
        return components.joined(separator: "/")
    }
}
