import Glibc
import IOMMUCore
import SystemPackage

/// The `pci_bus` class devices (`/sys/class/pci_bus`, each bus's directory
/// under its bridge) and the hot-plug slots (`/sys/bus/pci/slots`).
extension MachineTree {
    /// `class/pci_bus/` and `bus/pci/slots/`: made at boot (`pcibus_class`,
    /// `pci_slot_init`), listed from the model when first used.
    func addBusClassAndSlots() {
        tree.makeDirectories(Paths.pciBusClass).directory!.populateLazily { [unowned self] in
            for bus in machine.presentBuses { linkBusClassEntry(bus) }
        }
        tree.makeDirectories(Paths.slots).directory!.populateLazily { [unowned self] in
            for slot in machine.registeredSlots { addSlotDirectory(slot) }
        }
    }

    /// A bridge's secondary bus, for the population of its directory.
    func addSecondaryBusDirectory(of bridge: Device, in dir: Node) {
        if let bus = machine.secondaryBus(of: bridge.address) { addBusDirectory(bus, in: dir) }
    }

    /// The root buses of the host bridge whose directory is `dir`.
    func addRootBusDirectories(in dir: Node) {
        let path = dir.path
        for bus in machine.presentBuses where bus.bridge == nil && bus.parentPath == path { addBusDirectory(bus, in: dir) }
    }

    public func busAdded(_ bus: PCIBus) {
        linkBusClassEntry(bus)
        if let parent = tree.node(atPath: bus.parentPath) { addBusDirectory(bus, in: parent) }
        guard let slots = tree.node(atPath: Paths.slots) else { return }
        // The listing may already have made them, having read the model.
        for slot in bus.slots where slots.directory!.child(named: slot.name) == nil { addSlotDirectory(slot) }
    }

    public func busRemoved(_ bus: PCIBus) {
        var paths = [bus.sysfsPath, Paths.pciBusClass + "/" + bus.number.description]
        paths += bus.slots.map { Paths.slots + "/" + $0.name }
        for path in paths { tree.node(atPath: path).map(tree.remove) }
    }

    /// `class/pci_bus/<bus>`.
    private func linkBusClassEntry(_ bus: PCIBus) {
        guard let dir = tree.node(atPath: Paths.pciBusClass) else { return }
        tree.makeSymlink(bus.number.description, in: dir, to: bus.sysfsPath)
    }

    /// `<parent>/pci_bus/<bus>/` (the class's glue directory, then the
    /// device): `pcibus_attrs` (rescan, cpuaffinity, cpulistaffinity), the
    /// driver core's `uevent`, `power/`, `device` and `subsystem`.
    private func addBusDirectory(_ bus: PCIBus, in parent: Node) {
        let glue = tree.makeDirectory("pci_bus", in: parent)
        let name = bus.number.description
        guard glue.directory!.child(named: name) == nil else { return }
        let dir = tree.makeDirectory(name, in: glue)
        tree.makeAttribute("rescan", in: dir, permissions: 0o200,
                           store: Self.rescanStore { [machine] in machine.rescan(bus: bus) })
        // cpumask_of_pcibus: no NUMA node on the bus, so every possible CPU.
        tree.makeAttribute("cpuaffinity", in: dir, permissions: 0o444, .constant(PossibleCPUs.shared.mask + "\n"))
        tree.makeAttribute("cpulistaffinity", in: dir, permissions: 0o444, .constant(PossibleCPUs.shared.list + "\n"))
        // dev_uevent adds nothing for a class device without a bus or type.
        tree.makeAttribute("uevent", in: dir, permissions: 0o644, show: { .success([]) },
                           store: { [machine] buffer, _ in
                               Uevent.store(buffer, path: bus.sysfsPath, devicePrefix: "pci_bus \(name)", log: machine.log)
                           })
        RuntimePower().add(to: tree.makeDirectory("power", in: dir), in: tree)
        tree.makeSymlink("device", in: dir, to: bus.parentPath)
        tree.makeSymlink("subsystem", in: dir, to: Paths.pciBusClass)
    }

    /// `bus/pci/slots/<name>/`: `pci_slot`'s default attributes (address,
    /// max_bus_speed, cur_bus_speed) and what `fs_add_slot` adds for
    /// acpiphp's ops (power, attention, latch, adapter).
    private func addSlotDirectory(_ slot: HotplugSlot) {
        guard let slots = tree.node(atPath: Paths.slots) else { return }
        let dir = tree.makeDirectory(slot.name, in: slots)
        let spec = slot.spec
        // address_read_file: "%04x:%02x:%02x".
        tree.makeAttribute("address", in: dir, permissions: 0o444,
                           .constant(spec.bus.description + ":" + hexDigits(spec.device, 2) + "\n"))
        tree.makeAttribute("max_bus_speed", in: dir, permissions: 0o444, .constant(spec.maxBusSpeed + "\n"))
        tree.makeAttribute("cur_bus_speed", in: dir, permissions: 0o444, .constant(spec.currentBusSpeed + "\n"))
        tree.makeAttribute("power", in: dir, permissions: 0o644,
                           show: { .success(Array((slot.isEnabled ? "1\n" : "0\n").utf8)) },
                           store: { [machine] buffer, _ in
                               machine.setPower(of: slot, buffer).map { .failure($0) } ?? .success(buffer.count)
                           })
        tree.makeAttribute("attention", in: dir, permissions: 0o644,
                           show: { .failure(slot.attentionReadError) },
                           store: { _, _ in .failure(slot.attentionWriteError) })
        tree.makeAttribute("latch", in: dir, permissions: 0o444,
                           show: { .success(Array((slot.latchOpen ? "1\n" : "0\n").utf8)) })
        tree.makeAttribute("adapter", in: dir, permissions: 0o444,
                           show: { .success(Array((slot.hasAdapter ? "1\n" : "0\n").utf8)) })
        // fs_add_slot → pci_hp_create_module_link (drivers/pci/slot.c):
        // `module` → the hot-plug driver's /sys/module/acpiphp, where
        // `kset_find_obj(module_kset, "acpiphp")` finds it.
        if machine.profile.linksSlotModule {
            _ = tree.makeDirectories(Paths.hotplugDriverModule)
            tree.makeSymlink("module", in: dir, to: Paths.hotplugDriverModule)
        }
    }
}

/// `cpu_possible_mask` of the host the mount serves (the CPUs a script
/// on it sees in /sys/devices/system/cpu/possible), as `%*pb` and `%*pbl`
/// print it.
struct PossibleCPUs: Sendable {
    /// Hex words of 32 CPUs, most significant first, comma-separated.
    let mask: String
    /// Ranges, e.g. `0-1`.
    let list: String

    static let shared = PossibleCPUs()

    init() {
        var cpus: [Int] = []
        for range in Self.read("/sys/devices/system/cpu/possible").split(separator: ",") {
            let bounds = range.split(separator: "-").compactMap { Int($0) }
            if let first = bounds.first, let last = bounds.last, first <= last { cpus += Array(first...last) }
        }
        if cpus.isEmpty { cpus = Array(0..<max(1, sysconf(Int32(_SC_NPROCESSORS_CONF)))) }
        self.init(cpus: cpus)
    }

    /// A small text file's first line, "" if it cannot be read.
    private static func read(_ path: String) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.read(fd, &buffer, buffer.count)
        return n > 0 ? String(decoding: buffer[0..<n].prefix { $0 != 0x0a }, as: UTF8.self) : ""
    }

    init(cpus: [Int]) {
        let count = (cpus.max() ?? 0) + 1
        var words = [UInt32](repeating: 0, count: (count + 31) / 32)
        for cpu in cpus { words[cpu / 32] |= 1 << UInt32(cpu % 32) }
        // bitmap_print_to_pagebuf: the top word without leading zeros.
        mask = words.reversed().enumerated()
            .map { $0.offset == 0 ? String($0.element, radix: 16) : hexDigits($0.element, 8) }
            .joined(separator: ",")
        var ranges: [String] = []
        var start = cpus.first ?? 0, previous = start
        for cpu in cpus.dropFirst() + [Int.max] {
            if cpu == previous + 1 { previous = cpu; continue }
            ranges.append(start == previous ? "\(start)" : "\(start)-\(previous)")
            start = cpu
            previous = cpu
        }
        list = ranges.joined(separator: ",")
    }
}
