import Glibc
import SystemPackage

/// PCI function reset and the IOMMU's reset fencing (§7):
/// `pci_reset_function` → `pci_dev_reset_iommu_prepare/done`.
extension Machine {
    /// `echo 1 > reset`: resets `device` with its device lock held. ENOTTY
    /// without a reset method. On kernels that fence resets, an ATS device's
    /// RID sits on the blocking domain for the reset's duration, and its
    /// group refuses domain changes (EBUSY) meanwhile.
    public func reset(_ device: Device) -> Errno? {
        device.lock.withLock { state in
            guard state.isPresent else { return .noDevice }
            resetsRunning.withLock { $0[device.address, default: 0] += 1 }
            defer {
                resetsRunning.withLock { running in
                    running[device.address] = running[device.address].flatMap { $0 > 1 ? $0 - 1 : nil }
                }
            }
            // __pci_reset_function_locked: the first method that does not
            // answer ENOTTY decides; ENOTTY if none is left.
            let methods = state.resetMethods ?? device.resetMethods
            guard methods.contains(where: { $0 != "bus" || slotBusReset(device) == nil }) else { return .inappropriateIOCTLForDevice }
            let fenced = profile.fencesResets && device.ats ? device.group : nil
            if let group = fenced, let error = group.prepareReset(device) {
                log.append(device.logPrefix + "failed to stop IOMMU for a PCI reset: -\(error.rawValue)")
                return error
            }
            sleep(for: device.resetDuration)
            fenced?.finishReset(device)
            if secondaryBus(of: device.address) != nil { clearRegisters(below: device) }
            return nil
        }
    }

    /// `reset_method` store: an empty line disables every method (a reset
    /// then fails with ENOTTY), `default` restores the probed ones, else a
    /// space-separated list of methods the device supports; an unknown or
    /// unsupported name → EINVAL, leaving the methods as they were.
    public func setResetMethods(_ device: Device, _ buffer: UnsafeRawBufferPointer) -> Errno? {
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        var text = String(decoding: buffer[0..<end], as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        if text.isEmpty {
            device.lock.withLock { $0.resetMethods = [] }
            log.append(device.logPrefix + "All device reset methods disabled by user")
            return nil
        }
        if text == "default" {
            device.lock.withLock { $0.resetMethods = nil }
            return nil
        }
        let known = ["device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus"]
        var chosen: [String] = []
        for name in text.split(separator: " ").map({ $0.trimmingWhitespace() }) where !name.isEmpty {
            guard known.contains(name) else {
                log.append(device.logPrefix + "Invalid reset method '\(name)'")
                return .invalidArgument
            }
            guard device.resetMethods.contains(name) else {
                log.append(device.logPrefix + "Unsupported reset method '\(name)'")
                return .invalidArgument
            }
            chosen.append(name)
        }
        device.lock.withLock { $0.resetMethods = chosen }
        return nil
    }
}

extension Machine {
    /// The devices being reset now, by address.
    public var resettingDevices: [PCIAddress] { resetsRunning.withLock { $0.keys.sorted() } }
}

extension IOMMUGroup {
    /// `pci_dev_reset_iommu_prepare` (v7.1): parks the device's RID on the
    /// blocking domain, leaving `group->domain` as it is. Nested prepares
    /// only count.
    func prepareReset(_ device: Device) -> Errno? {
        state.withLock { s in
            guard let index = s.devices.firstIndex(where: { $0.device === device }) else { return nil }
            if let errno = subsystem.faults.fire(.resetPrepare) { return errno }
            let key = ObjectIdentifier(device)
            if let depth = s.resetDepth[key] {
                s.resetDepth[key] = depth + 1
                return nil
            }
            if s.blockingDomain == nil {
                if let errno = subsystem.faults.fire(.blockingDomainAlloc) { return errno }
                let type: DomainType = device.unit?.abilities.canAllocate(.blocked) == false ? .unmanaged : .blocked
                guard let unit = device.unit, case .success(let d) = subsystem.allocateDomain(type, on: unit, at: nil) else {
                    return .noMemory
                }
                s.blockingDomain = d
            }
            s.devices[index].attached = s.blockingDomain
            s.resetDepth[key] = 1
            return nil
        }
    }

    /// `pci_dev_reset_iommu_done`: the outermost done re-attaches the RID to
    /// the group's (possibly updated) domain.
    func finishReset(_ device: Device) {
        state.withLock { s in
            let key = ObjectIdentifier(device)
            guard let depth = s.resetDepth[key] else { return }
            _ = subsystem.faults.fire(.resetDone)
            if depth > 1 {
                s.resetDepth[key] = depth - 1
                return
            }
            s.resetDepth[key] = nil
            if let index = s.devices.firstIndex(where: { $0.device === device }) {
                s.devices[index].attached = s.domain
            }
        }
    }

    /// True while a member is being reset (its group's domain is fenced).
    public var isResetting: Bool { state.withLock { !$0.resetDepth.isEmpty } }
}

private extension Substring {
    /// `strim`: without leading and trailing white space.
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
