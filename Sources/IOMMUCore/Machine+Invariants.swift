/// What must hold of a machine between operations, whatever was written,
/// injected or requested before: checked by the tests and the fuzz
/// targets after each step.
extension Machine {
    /// Every invariant that does not hold, as a sentence naming the group
    /// or device (empty when all hold). Reads each group, device and the
    /// VFIO state under its own lock, so it is meant for a machine nothing
    /// else changes meanwhile.
    ///
    /// - Group ids are unique; a group has members and, unless it is a VFIO
    ///   no-IOMMU group, a default domain; an unowned group is on it; every member is attached to the group's
    ///   domain; no reset is in progress.
    /// - Every present device is in exactly one group, the one it points at.
    /// - `owner_cnt` counts what holds the group: each bound driver that
    ///   uses the DMA API (`iommu_device_use_default_domain`), each device
    ///   bound to the iommufd context that owns it, and the legacy VFIO
    ///   container the group is set to; kernel drivers and a user never
    ///   share a group.
    /// - VFIO's containers and open files are of groups and devices that exist.
    /// - A PF's VFs are present devices that name it, and a VF's PF is present.
    public func invariantViolations() -> [String] {
        let groups = groups
        let devices = devices
        var violations: [String] = []
        if Set(groups.map(\.id)).count != groups.count { violations.append("duplicate group ids in \(groups.map(\.id))") }
        var membership: [PCIAddress: [Int]] = [:]
        for group in groups {
            let s = group.snapshot
            for address in s.devices { membership[address, default: []].append(s.id) }
            violations += groupViolations(group, s)
        }
        for device in devices {
            let expected = device.group.map { [$0.id] } ?? []
            if membership[device.address] ?? [] != expected {
                violations.append("\(device.address) is in groups \(membership[device.address] ?? []) but points at \(expected)")
            }
            if !device.isPresent { violations.append("\(device.address) is listed but not present") }
        }
        let absent = Set(membership.keys).subtracting(devices.map(\.address))
        if !absent.isEmpty { violations.append("groups list absent devices \(absent.sorted())") }
        violations += vfioViolations(present: Set(devices.map(\.address)))
        for device in devices {
            for vf in device.virtualFunctions where !(vf.isPresent && self.device(at: vf.address) === vf) {
                violations.append("\(device.address) has a stale VF \(vf.address)")
            }
            if let pf = device.physicalFunction, self.device(at: pf)?.virtualFunctions.contains(where: { $0 === device }) != true {
                violations.append("\(device.address) is an orphan VF of \(pf)")
            }
        }
        return violations
    }

    /// VFIO holds what it uses (`vfio_group` holds its `iommu_group`, an
    /// open device file its device): a container's groups and the open
    /// group files are of groups that exist, their device files of
    /// present devices.
    private func vfioViolations(present: Set<PCIAddress>) -> [String] {
        let (containers, openGroups) = vfio.withLock { v in (v.containers.mapValues(\.groups), v.openGroups) }
        var violations: [String] = []
        for (name, ids) in containers.sorted(by: { $0.key < $1.key }) {
            for id in ids.sorted() where group(id: id) == nil {
                violations.append("VFIO container \(name) holds group \(id), which does not exist")
            }
        }
        for (id, files) in openGroups.sorted(by: { $0.key < $1.key }) {
            if group(id: id) == nil { violations.append("the VFIO file of group \(id) is open, but the group does not exist") }
            for address in files.keys.sorted() where !present.contains(address) {
                violations.append("a VFIO device file of \(address) (group \(id)) is open, but the device is gone")
            }
        }
        return violations
    }

    private func groupViolations(_ group: IOMMUGroup, _ s: GroupSnapshot) -> [String] {
        var violations: [String] = []
        func check(_ condition: Bool, _ text: @autoclosure () -> String) {
            if !condition { violations.append("group \(s.id) " + text()) }
        }
        let members = s.devices.compactMap { device(at: $0) }
        check(!s.devices.isEmpty, "is empty")
        // A VFIO no-IOMMU group (members without a unit) has none.
        check(s.defaultDomainType != nil || members.allSatisfy { $0.unit == nil }, "has no default domain")
        check(s.owner != nil || s.defaultDomainType == nil || s.isOnDefaultDomain, "is unowned but off its default domain")
        check(s.deviceDomainsMatchGroup, "has members on \(s.attachedPerDevice), the group on \(String(describing: s.attachedDomainType))")
        check(!group.isResetting, "is still resetting")
        let kernelUsers = members.filter { $0.driver.map { !$0.managesDMA } ?? false }.count
        let iommufdUsers = members.filter { device in
            device.iommufdContext.map { DMAOwner.iommufd($0) == s.owner } ?? false
        }.count
        let container = vfio.withLock { $0.containerName(of: s.id) }
        let users = iommufdUsers + (container == nil ? 0 : 1)
        check(s.ownerCount == kernelUsers + users,
              "has owner_cnt \(s.ownerCount) for \(kernelUsers) bound DMA API users, \(iommufdUsers) iommufd-bound members, container \(container ?? "none")")
        check(kernelUsers == 0 || s.owner == nil, "is owned by \(s.owner!) while \(kernelUsers) kernel drivers use it")
        check((users > 0) == (s.owner != nil), "has owner \(s.owner.map(\.description) ?? "none") for \(users) users")
        return violations
    }
}
