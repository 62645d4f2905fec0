import SystemPackage

/// SR-IOV through `sriov_numvfs` (`drivers/pci/iov.c`): VFs are created
/// and destroyed like hot-plugged devices, each in a new IOMMU group.
extension Machine {
    /// `sriov_numvfs_store`: `count` VFs (0 disables them). ERANGE above
    /// `sriov_totalvfs`; the current number is a no-op; ENOENT while no
    /// driver is bound to the PF; EBUSY when changing a non-zero number to
    /// another non-zero number.
    public func setNumberOfVFs(_ pf: Device, _ count: Int) -> Errno? {
        guard let sriov = pf.sriov else { return .noDevice }
        if count > sriov.totalVFs { return .outOfRange }
        return rescanRemove.withLock { _ -> Errno? in
            let current = pf.virtualFunctions.count
            if count == current { return nil }
            guard pf.driver != nil else {
                log.append(pf.logPrefix + "no driver bound to device; cannot configure SR-IOV")
                return .noSuchFileOrDirectory
            }
            if count == 0 {
                // sriov_del_vfs (drivers/pci/iov.c): VF 0 first.
                for vf in pf.virtualFunctions { removeOne(vf) }
                pf.lock.withLock { $0.virtualFunctions = [] }
                return nil
            }
            if current != 0 {
                log.append(pf.logPrefix + "\(current) VFs already enabled. Disable before enabling \(count) VFs")
                return .resourceBusy
            }
            for index in 0..<count { addVirtualFunction(pf, sriov, index) }
            return nil
        }
    }

    /// `sriov_drivers_autoprobe` store.
    public func setDriversAutoprobe(_ pf: Device, _ on: Bool) {
        pf.lock.withLock { $0.driversAutoprobe = on }
    }

    /// `pci_iov_add_virtfn`: the VF's routing id is the PF's plus the first
    /// VF offset plus the stride per index; it sits beside the PF.
    private func addVirtualFunction(_ pf: Device, _ sriov: MachineSpec.SRIOVSpec, _ index: Int) {
        rescanRemove.assertHeld()
        let pfRID = Int(pf.address.bus) << 8 | Int(pf.address.device) << 3 | Int(pf.address.function)
        let rid = pfRID + sriov.offset + sriov.stride * index
        guard rid <= 0xffff else { return }
        let address = PCIAddress(domain: pf.address.domain, bus: UInt8(rid >> 8),
                                 device: UInt8((rid >> 3) & 0x1f), function: UInt8(rid & 7))
        let parentPath = String(pf.sysfsPath[..<pf.sysfsPath.lastIndex(of: "/")!])
        // The unit-wide MSI window (`get_resv_regions` gives it to every
        // device of the unit) comes with the VF; the PF's own direct
        // regions (RMRRs name devices) do not.
        let unitRegions = pf.reservedRegions.filter { $0.kind == .msi || $0.kind == .softwareMSI }
        let spec = MachineSpec.DeviceSpec(
            address: address, vendorID: pf.vendorID, deviceID: sriov.vfDeviceID, classCode: pf.classCode,
            unit: pf.unit?.name, group: "vf " + address.description, reservedRegions: unitRegions, nativeDriver: sriov.vfDriver,
            ats: pf.ats, resetMethods: ["flr"], resetDuration: pf.resetDuration, physicalFunction: pf.address,
            multifunction: false, function: pf.function.virtualFunction)
        guard let (vf, group, isNew) = try? join(DeviceRecord(spec: spec, sysfsPath: parentPath + "/" + address.description), hotAdded: true) else { return }
        pf.lock.withLock { $0.virtualFunctions.append(vf) }
        finishHotAdd(vf, group, isNew)
        if pf.driversAutoprobe { _ = probe(vf) }
    }
}
