import Synchronization

/// A function's resources as its registers and the kernel hold them, in
/// the order of its `PCIResourceLayout`.
struct PlacedResources {
    /// The described resources (`PCIResourceLayout`).
    let layout: [PCIResourceSpec]
    /// The base each BAR or window register holds. It belongs to the
    /// hardware: a removal keeps it, a rescan reads it back.
    var registers: [UInt64]
    /// `res->start` of each resource while the function is present (nil:
    /// unassigned); nil while it is not.
    var assigned: [UInt64?]?
}

/// PCI resources: reading BARs at enumeration (drivers/pci/probe.c),
/// assigning the new ones after a rescan (drivers/pci/setup-bus.c,
/// setup-res.c) and programming bridges' windows.
///
/// Each bus's `placements` is a leaf lock taken once per bus and step;
/// everything that changes placements runs under `rescanRemove` or the
/// reset device's lock.
extension Machine {
    /// The described resources of `record`, in resource-number order.
    private static func layout(_ record: DeviceRecord) -> [PCIResourceSpec] { record.spec.resources?.resources ?? [] }

    /// The bus `address` is on; its lock holds the function's placements.
    private func placementBus(_ address: PCIAddress) -> PCIBus? { buses[PCIBusNumber(of: address)] }

    /// The registers of `record`'s function: the firmware's bases until
    /// something reprograms them.
    private static func registers(_ record: DeviceRecord, in placements: [PCIAddress: PlacedResources]) -> [UInt64] {
        placements[record.spec.address]?.registers ?? layout(record).map(\.base)
    }

    /// At boot the kernel claims what the firmware assigned
    /// (`pcibios_resource_survey`). After a hot-add, `__pci_read_base`
    /// logs each BAR as read, and a bridge's `pci_read_bridge_windows` its
    /// bus range and open windows (6.12 format); the resources stay
    /// unassigned until `assignResources`.
    func readResources(_ device: Device, hotAdded: Bool) {
        let layout = Self.layout(device.record)
        guard !layout.isEmpty, let bus = placementBus(device.address) else { return }
        let registers = bus.placements.withLock { placements in
            let registers = Self.registers(device.record, in: placements)
            placements[device.address] = PlacedResources(layout: layout, registers: registers,
                                                         assigned: hotAdded ? layout.map { _ in nil } : registers.map { $0 })
            return registers
        }
        guard hotAdded else { return }
        let atEnumeration = profile.logsBridgeWindowsAtEnumeration
        if atEnumeration, device.record.spec.headerLayout == 1 {
            log.append(device.logPrefix + "PCI bridge to " + busRangeText(behind: device))
        }
        for (resource, base) in zip(layout, registers) where !resource.isWindow {
            log.append(device.logPrefix + resource.name + " " + resource.printed(at: base))
        }
        if atEnumeration { logWindows(device, layout: layout, registers: registers) }
    }

    /// `pci_read_bridge_windows` / `pci_read_bridge_bases`: one
    /// `  bridge window %pR` line per open window.
    private func logWindows(_ bridge: Device, layout: [PCIResourceSpec], registers: [UInt64]) {
        for (resource, base) in zip(layout, registers) where resource.isWindow {
            log.append(bridge.logPrefix + "  " + resource.name + " " + resource.printed(at: base))
        }
    }

    /// `pci_release_dev`: a removed function's resources leave the
    /// kernel's tree; its registers keep their values.
    func releaseResources(_ device: Device) {
        guard device.record.spec.resources != nil else { return }
        placementBus(device.address)?.placements.withLock { $0[device.address]?.assigned = nil }
    }

    /// `%pR` of the bus range of `bridge`'s secondary bus (`busn_res`):
    /// `[bus 03]` or `[bus 02-04]`.
    func busRangeText(behind bridge: Device) -> String {
        let range = busRange(behind: bridge)
        return "[bus " + hexDigits(range.secondary, 2)
            + (range.subordinate == range.secondary ? "" : "-" + hexDigits(range.subordinate, 2)) + "]"
    }

    /// `resource_show` (pci-sysfs.c): `start end flags` per resource, as
    /// `0x%016llx`; an unassigned or undescribed one reads as zeros.
    public func resourceText(of device: Device) -> String {
        let count = device.record.spec.headerLayout == 1 ? PCIResourceSpec.bridgeLineCount : PCIResourceSpec.endpointLineCount
        var lines = [(start: UInt64, end: UInt64, flags: UInt64)](repeating: (0, 0, 0), count: count)
        let layout = Self.layout(device.record)
        if !layout.isEmpty, let assigned = placementBus(device.address)?.placements.withLock({ $0[device.address]?.assigned }) {
            for (resource, start) in zip(layout, assigned) where resource.index < count {
                guard let start else { continue }
                lines[resource.index] = (start, start + resource.size - 1, resource.flags)
            }
        }
        return lines.map { "0x" + hexDigits($0.start, 16) + " 0x" + hexDigits($0.end, 16) + " 0x" + hexDigits($0.flags, 16) + "\n" }
            .joined()
    }

    /// What `device`'s BAR and window registers hold now, for its config space.
    public func registerContents(of device: Device) -> [(resource: PCIResourceSpec, base: UInt64)] {
        let layout = Self.layout(device.record)
        guard !layout.isEmpty, let bus = placementBus(device.address) else { return [] }
        return Array(zip(layout, bus.placements.withLock { Self.registers(device.record, in: $0) }))
    }

    /// A reset of a bridge resets what is behind it, but `pci_reset_function`
    /// saves and restores only the bridge's own config space
    /// (`pci_dev_save_and_disable`, `pci_dev_restore`): the functions below
    /// lose their BARs and read back 0 when scanned again. The kernel's
    /// resources of those still present do not change.
    func clearRegisters(below bridge: Device) {
        bridge.lock.assertHeld()
        let prefix = bridge.sysfsPath + "/"
        var below: [PCIBusNumber: [DeviceRecord]] = [:]
        for record in catalog where record.sysfsPath.hasPrefix(prefix) && record.spec.resources != nil {
            below[PCIBusNumber(of: record.spec.address), default: []].append(record)
        }
        for (number, records) in below {
            buses[number]?.placements.withLock { placements in
                for record in records {
                    let layout = Self.layout(record)
                    let zeros = layout.map { _ in UInt64(0) }
                    placements[record.spec.address, default: PlacedResources(layout: layout, registers: zeros, assigned: nil)]
                        .registers = zeros
                }
            }
        }
    }

    /// How a rescan assigns what it found (`rescanRemove` held).
    enum Assignment {
        /// `pci_rescan_bus`: `pci_assign_unassigned_bus_resources` of a bus.
        case bus(PCIBus)
        /// `pci_rescan_bus_bridge_resize` (an empty secondary bus) or
        /// acpiphp's `enable_slot`: `pci_assign_unassigned_bridge_resources`.
        case bridge(Device)
    }

    func assign(_ assignment: Assignment) {
        rescanRemove.assertHeld()
        // The present devices by bus, from one hold of the registry.
        let present = Dictionary(grouping: devices) { PCIBusNumber(of: $0.address) }
        switch assignment {
        case .bus(let bus): assignResources(on: bus, behind: bridge(of: bus, in: present), present)
        case .bridge(let bridge):
            // __pci_bridge_assign_resources: the bridge's own windows, its
            // bus, then the bridge is programmed whether enabled or not.
            if let bus = placementBus(bridge.address) {
                assignResources(of: [bridge], on: bus, behind: self.bridge(of: bus, in: present))
            }
            if let secondary = secondaryBus(of: bridge.address) { assignResources(on: secondary, behind: bridge, present) }
            setUpBridge(bridge)
        }
    }

    /// The present bridge that `bus` is the secondary bus of (nil for a root bus).
    private func bridge(of bus: PCIBus, in present: [PCIBusNumber: [Device]]) -> Device? {
        guard let address = bus.bridge else { return nil }
        return present[PCIBusNumber(of: address)]?.first { $0.address == address }
    }

    /// `__pci_bus_assign_resources`: the bus's unassigned resources
    /// (`pbus_assign_resources_sorted`), then each bridge's secondary bus,
    /// and a bridge not yet enabled (`pci_is_enabled`) is programmed
    /// (`pci_setup_bridge`).
    private func assignResources(on bus: PCIBus, behind bridge: Device?, _ present: [PCIBusNumber: [Device]]) {
        let onBus = present[bus.number] ?? []
        assignResources(of: onBus, on: bus, behind: bridge)
        for device in onBus {
            guard let secondary = secondaryBus(of: device.address) else { continue }
            assignResources(on: secondary, behind: device, present)
            if device.enableCount == 0 { setUpBridge(device) }
        }
    }

    /// `pdev_sort_resources` + `__assign_resources_sorted` for `functions`
    /// on `bus`: the unassigned resources, largest alignment first; equal
    /// ones keep function and resource order, since each is inserted before
    /// the first with a strictly smaller alignment. Each goes to the first
    /// free, aligned place in a window of the bus's bridge that
    /// `__pci_assign_resource` accepts (`allocate_resource` is first fit).
    private func assignResources(of functions: [Device], on bus: PCIBus, behind bridge: Device?) {
        let window = bridge.map { windows(of: $0) } ?? []
        let lines: [String] = bus.placements.withLock { placements in
            var pending: [(device: Device, slot: Int, resource: PCIResourceSpec)] = []
            for device in functions {
                guard let assigned = placements[device.address]?.assigned else { continue }
                for (slot, resource) in Self.layout(device.record).enumerated() where assigned[slot] == nil {
                    let position = pending.firstIndex { resource.alignment > $0.resource.alignment } ?? pending.count
                    pending.insert((device, slot, resource), at: position)
                }
            }
            var lines: [String] = []
            for (device, slot, resource) in pending {
                let name = device.logPrefix + resource.name + " "
                guard let start = Self.firstFit(resource, in: window, avoiding: Self.used(placements, resource.space)) else {
                    // pci_assign_resource; the firmware address is not retried.
                    lines.append(name + resource.printedSize + ": can't assign; no space")
                    lines.append(name + resource.printedSize + ": failed to assign")
                    continue
                }
                placements[device.address]!.assigned![slot] = start
                placements[device.address]!.registers[slot] = start  // pci_update_resource
                lines.append(name + resource.printed(at: start) + ": assigned")
            }
            return lines
        }
        lines.forEach(log.append)
    }

    /// The assigned windows of `bridge`, in resource order (io, mem, pref:
    /// the order `pci_bus_for_each_resource` offers them).
    private func windows(of bridge: Device) -> [(resource: PCIResourceSpec, start: UInt64)] {
        guard let bus = placementBus(bridge.address),
              let assigned = bus.placements.withLock({ $0[bridge.address]?.assigned }) else { return [] }
        return zip(Self.layout(bridge.record), assigned).compactMap { resource, start in
            guard resource.isWindow, let start else { return nil }
            return (resource, start)
        }
    }

    /// Every assigned range of `space` on a bus, as (start, end).
    private static func used(_ placements: [PCIAddress: PlacedResources], _ space: PCIResourceSpec.Space) -> [(UInt64, UInt64)] {
        var ranges: [(UInt64, UInt64)] = []
        for placed in placements.values {
            guard let assigned = placed.assigned else { continue }
            for (start, resource) in zip(assigned, placed.layout) where resource.space == space {
                if let start { ranges.append((start, start + resource.size - 1)) }
            }
        }
        return ranges
    }

    /// `__pci_assign_resource`'s windows in turn, first fit in each:
    /// `__find_resource` walks the gaps in address order, and x86's
    /// `pcibios_align_resource` moves an I/O start off ISA alias space.
    private static func firstFit(_ resource: PCIResourceSpec, in windows: [(resource: PCIResourceSpec, start: UInt64)],
                                 avoiding used: [(start: UInt64, end: UInt64)]) -> UInt64? {
        let taken = used.sorted { $0.start < $1.start }
        for match in resource.windowMatches {
            for window in windows where resource.fits(in: window.resource, matching: match) {
                let limit = window.start + window.resource.size - 1
                var candidate = align(window.start, resource)
                for range in taken where range.end >= candidate && range.start <= limit {
                    if candidate + resource.size - 1 < range.start { break }
                    candidate = align(range.end + 1, resource)
                }
                if candidate >= window.start, candidate + resource.size - 1 <= limit { return candidate }
            }
        }
        return nil
    }

    private static func align(_ start: UInt64, _ resource: PCIResourceSpec) -> UInt64 {
        var aligned = (start + resource.alignment - 1) & ~(resource.alignment - 1)
        if resource.space == .io, aligned & 0x300 != 0 { aligned = (aligned + 0x3ff) & ~0x3ff }
        return aligned
    }

    /// `__pci_setup_bridge`: logs the bus range, then each window it
    /// programs (`pci_setup_bridge_io`/`_mmio`/`_mmio_pref`).
    private func setUpBridge(_ bridge: Device) {
        log.append(bridge.logPrefix + "PCI bridge to " + busRangeText(behind: bridge))
        for (resource, start) in windows(of: bridge) {
            log.append(bridge.logPrefix + "  " + resource.name + " " + resource.printed(at: start))
        }
    }

    /// `pci_read_bridge_bases` from `pcibios_fixup_bus`, once a new bus's
    /// devices are scanned: the range again, the windows not (6.12).
    func logBusFixup(_ bridge: Device) {
        log.append(bridge.logPrefix + "PCI bridge to " + busRangeText(behind: bridge))
        // Before 6.8 the windows are logged here only (pci_read_bridge_bases).
        guard !profile.logsBridgeWindowsAtEnumeration,
              let placed = placementBus(bridge.address)?.placements.withLock({ $0[bridge.address] }) else { return }
        logWindows(bridge, layout: placed.layout, registers: placed.registers)
    }

    /// `pci_bus_release_busn_res` from `pci_remove_bus`.
    func logBusNumbersReleased(_ bus: PCIBus) {
        guard let bridge = bus.bridge.flatMap({ device(at: $0) }) else { return }
        log.append("pci_bus " + bus.number.description + ": busn_res: " + busRangeText(behind: bridge) + " is released")
    }
}
