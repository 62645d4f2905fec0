/// What must hold of a machine between operations, whatever was written,
/// injected or requested before: checked by the tests and the fuzz
/// targets after each step.
extension Machine {
    /// Every invariant that does not hold, as a sentence naming the group
    /// or device (empty when all hold). Reads the registry, each group,
    /// each device and the VFIO state once, each under its own lock, so it
    /// is meant for a machine nothing else changes meanwhile.
    ///
    /// - Group ids are unique; a group has members and, unless it is a VFIO
    ///   no-IOMMU group, a default domain; an unowned group is on it;
    ///   every member is attached to the group's domain; no reset is in
    ///   progress.
    /// - Every present device is in exactly one group, the one it points at.
    /// - `owner_cnt` counts what holds the group: each bound driver that
    ///   uses the DMA API (`iommu_device_use_default_domain`), each device
    ///   bound to the iommufd context that owns it, and the legacy VFIO
    ///   container the group is set to; kernel drivers and a user never
    ///   share a group.
    /// - VFIO's containers and open files are of groups and devices that
    ///   exist (a `vfio_group` holds its `iommu_group`, an open device file
    ///   its device).
    /// - A PF's VFs are present devices that name it, and a VF's PF is present.
    public func invariantViolations() -> [String] {
        let census = Census(self)
        var violations: [String] = []
        if Set(census.groups.map(\.snapshot.id)).count != census.groups.count {
            violations.append("duplicate group ids in \(census.groups.map(\.snapshot.id))")
        }
        for group in census.groups { violations += groupViolations(group, census) }
        violations += membershipViolations(census)
        violations += vfioViolations(census)
        for device in census.devices.values.sorted(by: { $0.address < $1.address }) {
            for vf in device.virtualFunctions where !(vf.isPresent && census.devices[vf.address] === vf) {
                violations.append("\(device.address) has a stale VF \(vf.address)")
            }
            if let pf = device.physicalFunction, census.devices[pf]?.virtualFunctions.contains(where: { $0 === device }) != true {
                violations.append("\(device.address) is an orphan VF of \(pf)")
            }
        }
        return violations
    }

    /// What the checks read, once.
    private struct Census {
        let groups: [(group: IOMMUGroup, snapshot: GroupSnapshot)]
        let devices: [PCIAddress: Device]
        /// Each container's groups, by container name.
        let containers: [String: Set<Int>]
        /// Open group files, with the open device files of each.
        let openGroups: [Int: [PCIAddress: Int]]

        init(_ machine: Machine) {
            groups = machine.groups.map { ($0, $0.snapshot) }
            devices = Dictionary(machine.devices.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
            (containers, openGroups) = machine.vfio.withLock { v in (v.containers.mapValues(\.groups), v.openGroups) }
        }

        func container(of group: Int) -> String? { containers.first { $0.value.contains(group) }?.key }
        func groupExists(_ id: Int) -> Bool { groups.contains { $0.snapshot.id == id } }
    }

    private func groupViolations(_ entry: (group: IOMMUGroup, snapshot: GroupSnapshot), _ census: Census) -> [String] {
        let s = entry.snapshot
        var violations: [String] = []
        func check(_ condition: Bool, _ text: @autoclosure () -> String) {
            if !condition { violations.append("group \(s.id) " + text()) }
        }
        let members = s.devices.compactMap { census.devices[$0] }
        check(!s.devices.isEmpty, "is empty")
        // A VFIO no-IOMMU group (members without a unit) has none.
        check(s.defaultDomainType != nil || members.allSatisfy { $0.unit == nil }, "has no default domain")
        check(s.owner != nil || s.defaultDomainType == nil || s.isOnDefaultDomain, "is unowned but off its default domain")
        check(s.deviceDomainsMatchGroup, "has members on \(s.attachedPerDevice), the group on \(String(describing: s.attachedDomainType))")
        check(!entry.group.isResetting, "is still resetting")
        let kernelUsers = members.filter { $0.driver.map { !$0.managesDMA } ?? false }.count
        let iommufdUsers = members.filter { device in
            device.iommufdContext.map { DMAOwner.iommufd($0) == s.owner } ?? false
        }.count
        let container = census.container(of: s.id)
        let users = iommufdUsers + (container == nil ? 0 : 1)
        check(s.ownerCount == kernelUsers + users,
              "has owner_cnt \(s.ownerCount) for \(kernelUsers) bound DMA API users, \(iommufdUsers) iommufd-bound members, container \(container ?? "none")")
        check(kernelUsers == 0 || s.owner == nil, "is owned by \(s.owner!) while \(kernelUsers) kernel drivers use it")
        check((users > 0) == (s.owner != nil), "has owner \(s.owner.map(\.description) ?? "none") for \(users) users")
        return violations
    }

    /// Each present device in the one group it points at, and no group
    /// listing a device that is not present.
    private func membershipViolations(_ census: Census) -> [String] {
        var membership: [PCIAddress: [Int]] = [:]
        for (_, s) in census.groups {
            for address in s.devices { membership[address, default: []].append(s.id) }
        }
        var violations: [String] = []
        for device in census.devices.values.sorted(by: { $0.address < $1.address }) {
            let expected = device.group.map { [$0.id] } ?? []
            if membership[device.address] ?? [] != expected {
                violations.append("\(device.address) is in groups \(membership[device.address] ?? []) but points at \(expected)")
            }
            if !device.isPresent { violations.append("\(device.address) is listed but not present") }
        }
        let absent = Set(membership.keys).subtracting(census.devices.keys)
        if !absent.isEmpty { violations.append("groups list absent devices \(absent.sorted())") }
        return violations
    }

    private func vfioViolations(_ census: Census) -> [String] {
        var violations: [String] = []
        for (name, ids) in census.containers.sorted(by: { $0.key < $1.key }) {
            for id in ids.sorted() where !census.groupExists(id) {
                violations.append("VFIO container \(name) holds group \(id), which does not exist")
            }
        }
        for (id, files) in census.openGroups.sorted(by: { $0.key < $1.key }) {
            if !census.groupExists(id) { violations.append("the VFIO file of group \(id) is open, but the group does not exist") }
            for address in files.keys.sorted() where census.devices[address] == nil {
                violations.append("a VFIO device file of \(address) (group \(id)) is open, but the device is gone")
            }
        }
        return violations
    }
}
