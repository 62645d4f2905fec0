import Synchronization
import SystemPackage

/// A PCI bus number in its domain, `dddd:bb` as `pci_bus`'s `dev_name()`
/// prints it.
public struct PCIBusNumber: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var domain: UInt16
    public var bus: UInt8

    public init(domain: UInt16 = 0, bus: UInt8) {
        self.domain = domain
        self.bus = bus
    }

    /// The bus `address` is on.
    public init(of address: PCIAddress) { self.init(domain: address.domain, bus: address.bus) }

    public var description: String { hexDigits(domain, 4) + ":" + hexDigits(bus, 2) }

    public static func < (a: PCIBusNumber, b: PCIBusNumber) -> Bool { (a.domain, a.bus) < (b.domain, b.bus) }
}

/// A `struct pci_bus` and its class device: a root bus under its host
/// bridge (`pci_register_host_bridge`), or a bridge's secondary bus
/// (`pci_alloc_child_bus`), present while that bridge is.
public final class PCIBus: Sendable {
    public let number: PCIBusNumber
    /// The bridge whose secondary bus this is; nil for a root bus.
    public let bridge: PCIAddress?
    /// The directory of its parent device (`bus->bridge`): the host bridge
    /// (`devices/pci0000:00`) or the bridge's own.
    public let parentPath: String
    /// The class device's directory, `<parentPath>/pci_bus/<number>`.
    public let sysfsPath: String
    /// The hot-plug slots on the bus, by device number.
    public let slots: [HotplugSlot]
    /// The resources of the functions on this bus (a leaf lock; see
    /// Machine+Resources.swift): one lock per bus, so reading a device's
    /// `resource` never waits on another bus, and placing a bus's new
    /// resources takes it once.
    let placements = RankedMutex<[PCIAddress: PlacedResources]>(.busResources, [:])

    init(number: PCIBusNumber, bridge: PCIAddress?, parentPath: String, slots: [HotplugSlot]) {
        self.number = number
        self.bridge = bridge
        self.parentPath = parentPath
        self.sysfsPath = parentPath + "/pci_bus/" + number.description
        self.slots = slots
    }

    /// `pci_scan_child_bus` → `pcibios_add_bus` → `acpiphp_enumerate_slots`:
    /// a bus registers its slots before its devices are added. A slot
    /// holding a card starts enabled.
    func registerSlots(log: KernelLog) {
        for slot in slots {
            slot.setEnabled(slot.hasAdapter)
            log.append("acpiphp: Slot [\(slot.name)] registered")
        }
    }

    /// The buses of a machine, from its devices in probe order: a root bus
    /// for each bus a root device is on, a secondary bus for each bridge a
    /// device sits behind. The slots must name one of them.
    static func buses(of catalog: [DeviceRecord], slots: [MachineSpec.SlotSpec]) throws(MachineSpecError) -> [PCIBusNumber: PCIBus] {
        var parents: [PCIBusNumber: (bridge: PCIAddress?, path: String)] = [:]
        for record in catalog {
            let number = PCIBusNumber(of: record.spec.address)
            if let known = parents[number] {
                guard known.bridge == record.spec.parent else {
                    throw MachineSpecError("bus \(number) is behind two bridges (\(record.spec.address) and a device before it)")
                }
                continue
            }
            // A device's directory is in its bus's parent's.
            let path = record.sysfsPath
            parents[number] = (record.spec.parent, String(path[..<path.lastIndex(of: "/")!]))
        }
        var slotsByBus: [PCIBusNumber: [HotplugSlot]] = [:]
        var names: Set<String> = []
        for spec in slots {
            guard names.insert(spec.name).inserted else { throw MachineSpecError("two hot-plug slots are named \(spec.name)") }
            guard parents[spec.bus] != nil else { throw MachineSpecError("slot \(spec.name): no device is on bus \(spec.bus)") }
            slotsByBus[spec.bus, default: []].append(HotplugSlot(spec: spec))
        }
        var buses: [PCIBusNumber: PCIBus] = [:]
        for (number, parent) in parents {
            let slots = (slotsByBus[number] ?? []).sorted { ($0.spec.device, $0.spec.name) < ($1.spec.device, $1.spec.name) }
            buses[number] = PCIBus(number: number, bridge: parent.bridge, parentPath: parent.path, slots: slots)
        }
        return buses
    }
}

extension MachineSpec {
    /// A hot-plug slot the firmware describes (an ACPI slot object with
    /// `_SUN` and `_EJ0`, which acpiphp registers).
    public struct SlotSpec: Sendable, Equatable {
        /// The directory name under `/sys/bus/pci/slots` (`_SUN`, with a
        /// `-N` suffix where it repeats: `0`, `0-2`).
        public var name: String
        public var bus: PCIBusNumber
        /// The device number the slot holds on its bus.
        public var device: UInt8
        /// The slot's downstream port reports Data Link Layer Link Active
        /// and links faster than 5 GT/s (QEMU's root port with
        /// `hotplug=on`): after a secondary bus reset the kernel waits for
        /// the link, which does not come back.
        public var linkActiveReporting: Bool
        /// The bus's `max_bus_speed` and `cur_bus_speed` (`pci_speed_string`).
        public var maxBusSpeed: String
        public var currentBusSpeed: String

        public init(name: String, bus: PCIBusNumber, device: UInt8, linkActiveReporting: Bool = false,
                    maxBusSpeed: String = "Unknown", currentBusSpeed: String = "Unknown") {
            precondition(device < 32, "device must be < 32")
            self.name = name
            self.bus = bus
            self.device = device
            self.linkActiveReporting = linkActiveReporting
            self.maxBusSpeed = maxBusSpeed
            self.currentBusSpeed = currentBusSpeed
        }

        /// Whether `address` is a function in the slot.
        public func holds(_ address: PCIAddress) -> Bool {
            PCIBusNumber(of: address) == bus && address.device == device
        }
    }
}

/// An acpiphp slot (drivers/pci/hotplug/acpiphp_glue.c), registered while
/// its bus exists. `power` shows its `SLOT_ENABLED` flag; powering it off
/// removes its functions and evaluates `_EJ0`, after which the hardware
/// (QEMU) has ejected the card: nothing in the slot comes back.
public final class HotplugSlot: Sendable {
    public let spec: MachineSpec.SlotSpec
    /// `SLOT_ENABLED`; written under the machine's rescan/remove lock.
    private let enabled = Atomic<Bool>(false)
    /// The card was ejected (`_EJ0`); written under the same lock.
    private let ejected = Atomic<Bool>(false)

    init(spec: MachineSpec.SlotSpec) { self.spec = spec }

    public var name: String { spec.name }

    /// `acpiphp_get_power_status`: `SLOT_ENABLED`.
    public var isEnabled: Bool { enabled.load(ordering: .acquiring) }

    /// `acpiphp_get_adapter_status`: `get_slot_status()` is non-zero while a
    /// card answers config reads in the slot (QEMU's slots have no `_STA`).
    public var hasAdapter: Bool { !ejected.load(ordering: .acquiring) }

    /// `acpiphp_get_latch_status`: `!(sta & ACPI_STA_DEVICE_UI)`; the vendor
    /// id read reports `ACPI_STA_ALL` for a card, 0 without one.
    public var latchOpen: Bool { !hasAdapter }

    /// acpiphp's `get_attention_status` without an attention-LED driver
    /// (acpiphp_ibm registers one): EINVAL.
    public var attentionReadError: Errno { .invalidArgument }

    /// acpiphp's `set_attention_status` without an attention-LED driver: ENODEV.
    public var attentionWriteError: Errno { .noDevice }

    fileprivate func setEnabled(_ value: Bool) { enabled.store(value, ordering: .releasing) }
    fileprivate func eject() { ejected.store(true, ordering: .releasing) }
}

/// Buses, per-bus rescan and acpiphp slots.
///
/// Everything that changes them runs under `rescanRemove`
/// (`pci_lock_rescan_remove`), as the kernel's bus scans and acpiphp's
/// enable and disable do; reads take no lock.
extension Machine {
    /// The bus `number` if it exists now: a root bus, or a bridge's
    /// secondary bus while the bridge is present.
    public func bus(_ number: PCIBusNumber) -> PCIBus? {
        guard let bus = buses[number] else { return nil }
        if let bridge = bus.bridge, device(at: bridge) == nil { return nil }
        return bus
    }

    /// The buses that exist now, by number (their bridges looked up under
    /// one hold of the registry).
    public var presentBuses: [PCIBus] {
        let all = buses.keys.sorted().map { buses[$0]! }
        return withPresentDevices { present in all.filter { bus in bus.bridge.map { present[$0] != nil } ?? true } }
    }

    /// The registered hot-plug slots (those whose bus exists), by name.
    public var registeredSlots: [HotplugSlot] {
        presentBuses.flatMap(\.slots).sorted { $0.name < $1.name }
    }

    /// The secondary bus of `bridge`, if a described device is behind it.
    public func secondaryBus(of bridge: PCIAddress) -> PCIBus? { bridgeBuses[bridge] }

    /// `bus_rescan_store` (pci-sysfs.c): `pci_rescan_bus` of `bus` and
    /// every bus behind it (for an empty secondary bus,
    /// `pci_rescan_bus_bridge_resize` of its bridge: the same scan).
    public func rescan(bus: PCIBus) {
        let prefix = bus.parentPath + "/"
        rescanRemove.withLock { _ in
            let bridge = bus.bridge.flatMap { device(at: $0) }
            let empty = !devices.contains { PCIBusNumber(of: $0.address) == bus.number }
            addMissing(assigning: [bridge.map { empty ? .bridge($0) : .bus(bus) } ?? .bus(bus)]) {
                $0.sysfsPath.hasPrefix(prefix)
            }
        }
    }

    /// A bus that a rescan creates behind a bridge it added: its slots
    /// are registered, then the sysfs view follows.
    func addBus(_ bus: PCIBus) {
        rescanRemove.assertHeld()
        bus.registerSlots(log: log)
        observer?.busAdded(bus)
    }

    /// `pci_remove_bus` → `pcibios_remove_bus` (`acpiphp_remove_slots`),
    /// once the bus's devices are gone.
    func removeBus(_ bus: PCIBus) {
        rescanRemove.assertHeld()
        logBusNumbersReleased(bus)
        for slot in bus.slots { log.append("acpiphp: Slot [\(slot.name)] unregistered") }
        observer?.busRemoved(bus)
    }

    /// `power_write_file` (pci_hotplug_core.c): `simple_strtoul(buf, NULL,
    /// 10) & 0xff`; 0 runs `acpiphp_disable_slot`, 1 `acpiphp_enable_slot`,
    /// anything else is EINVAL.
    public func setPower(of slot: HotplugSlot, _ buffer: UnsafeRawBufferPointer) -> Errno? {
        switch UInt8(truncatingIfNeeded: Self.simpleStrtoul(buffer)) {
        case 0: disable(slot)
        case 1: enable(slot)
        default:
            log.append("pci_hotplug: Illegal value specified for power")
            return .invalidArgument
        }
        return nil
    }

    /// `acpiphp_disable_and_eject_slot`: every function in the slot goes
    /// (`disable_slot`: last first, each with what is behind it), then
    /// `_EJ0` ejects the card.
    private func disable(_ slot: HotplugSlot) {
        rescanRemove.withLock { _ in
            // The slot's functions, last first (nothing else removes one
            // meanwhile; the check skips one an earlier removal took).
            for device in devices.filter({ slot.spec.holds($0.address) }).reversed() where device.isPresent {
                removeSubtree(device)
            }
            slot.setEnabled(false)
            slot.eject()
        }
    }

    /// `acpiphp_enable_slot`: unless enabled, scans the slot and what is
    /// behind its bridges (`enable_slot`); `SLOT_ENABLED` stays set only if
    /// the slot's ACPI function (function 0) is there afterwards.
    private func enable(_ slot: HotplugSlot) {
        rescanRemove.withLock { _ in
            guard !slot.isEnabled else { return }
            let roots = catalog.filter { slot.spec.holds($0.spec.address) }.map { $0.sysfsPath + "/" }
            let bridge = buses[slot.spec.bus]?.bridge.flatMap { device(at: $0) }
            addMissing(assigning: bridge.map { [.bridge($0)] } ?? []) { record in
                slot.spec.holds(record.spec.address) || roots.contains { record.sysfsPath.hasPrefix($0) }
            }
            let bus = slot.spec.bus
            let functionZero = PCIAddress(domain: bus.domain, bus: bus.bus, device: slot.spec.device, function: 0)
            slot.setEnabled(device(at: functionZero) != nil)
        }
    }

    /// Whether `record` was on the card of an ejected slot: the hardware no
    /// longer has it, so no scan finds it.
    func isEjected(_ record: DeviceRecord) -> Bool {
        let number = PCIBusNumber(of: record.spec.address)
        return buses[number]?.slots.contains { !$0.hasAdapter && $0.spec.holds(record.spec.address) } ?? false
    }

    /// The hot-plug slot `device` is in (`dev->slot`), if registered.
    func slot(of device: Device) -> HotplugSlot? {
        bus(PCIBusNumber(of: device.address))?.slots.first { $0.spec.holds(device.address) }
    }

    /// `pci_reset_bus_function` of a device in a slot: acpiphp has no
    /// `reset_slot` (`pci_reset_hotplug_slot`: ENOTTY), so
    /// `pci_parent_bus_reset` resets the bridge's secondary bus, and
    /// `pci_bridge_wait_for_secondary_bus` gives up with ENOTTY on a port
    /// whose link does not come back up.
    /// - Returns: ENOTTY when that happens, nil when the bus reset works.
    func slotBusReset(_ device: Device) -> Errno? {
        guard let slot = slot(of: device), slot.spec.linkActiveReporting,
              let bridge = buses[slot.spec.bus]?.bridge.flatMap({ self.device(at: $0) }) else { return nil }
        // pci_bridge_wait_for_secondary_bus: the delay waited (100 ms), or
        // the older fixed text (`KernelProfile.namesLinkWaitDelay`).
        log.append(bridge.logPrefix + "Data Link Layer Link Active not set in \(profile.namesLinkWaitDelay ? 100 : 1000) msec")
        return .inappropriateIOCTLForDevice
    }

    /// `simple_strtoul(buf, NULL, 10)`: the leading decimal digits, 0 if
    /// there are none; no sign, no white space, overflow wraps.
    static func simpleStrtoul(_ buffer: UnsafeRawBufferPointer) -> UInt64 {
        var value: UInt64 = 0
        for byte in buffer {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { break }
            value = value &* 10 &+ UInt64(byte - UInt8(ascii: "0"))
        }
        return value
    }
}
