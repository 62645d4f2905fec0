import IOMMUCore
import SystemPackage

/// The PCI core's per-device files beyond the identity and driver-core
/// knobs (drivers/pci/pci-sysfs.c `pci_dev_attrs`, `pci_dev_config_attr`,
/// drivers/pci/iov.c), and the bus-wide settings of /sys/bus/pci.
extension MachineTree {
    /// `config` (0644, st_size `cfg_size`), `subsystem_vendor`,
    /// `subsystem_device`, `revision`, `irq`, `modalias`, `resource`
    /// (0444), `enable` and `uevent` (0644), and a VF's `sriov_vf_msix_count`.
    func addPCIAttributes(_ device: Device, in dir: Node) {
        let facts = device.function
        let spec = device.record.spec
        tree.makeAttribute("config", in: dir, permissions: 0o644,
                           .binary(PCIConfigSpace(device: device, machine: machine).attribute))
        constantAttribute("subsystem_vendor", in: dir, "0x" + hexDigits(facts.subsystemVendor, 4) + "\n")
        constantAttribute("subsystem_device", in: dir, "0x" + hexDigits(facts.subsystemDevice, 4) + "\n")
        constantAttribute("revision", in: dir, "0x" + hexDigits(facts.revision, 2) + "\n")
        constantAttribute("irq", in: dir, "\(facts.irq)\n")
        constantAttribute("modalias", in: dir, Self.modalias(spec) + "\n")
        tree.makeAttribute("resource", in: dir, permissions: 0o444,
                           show: { [machine] in .success(Array(machine.resourceText(of: device).utf8)) }, store: nil)
        tree.makeAttribute("enable", in: dir, permissions: 0o644,
                           show: { .success(Array("\(device.enableCount)\n".utf8)) },
                           store: { [machine] buffer, caller in
                               machine.storeEnable(device, buffer, caller: caller).map { .failure($0) } ?? .success(buffer.count)
                           })
        let path = dir.path
        tree.makeAttribute("uevent", in: dir, permissions: 0o644,
                           show: { .success(Array(Self.ueventText(device).utf8)) },
                           store: { [machine] buffer, _ in
                               Uevent.store(buffer, path: path, devicePrefix: (device.driver?.name ?? "pci") + " " + device.address.description,
                                            log: machine.log)
                           })
        if device.physicalFunction != nil {
            tree.makeAttribute("sriov_vf_msix_count", in: dir, permissions: 0o200, store: { buffer, _ in
                Self.storeVFMSIXCount(buffer).map { .failure($0) } ?? .success(buffer.count)
            })
        }
        // sriov_vf_total_msix_show: 0 unless the PF driver has
        // sriov_get_vf_total_msix, which none of the model's has.
        if device.sriov != nil { constantAttribute("sriov_vf_total_msix", in: dir, "0\n") }
    }

    /// `modalias_show` / the MODALIAS of `pci_uevent`.
    static func modalias(_ spec: MachineSpec.DeviceSpec) -> String {
        let facts = spec.configFacts
        return "pci:v" + hexDigits(spec.vendorID, 8).uppercased() + "d" + hexDigits(spec.deviceID, 8).uppercased()
            + "sv" + hexDigits(facts.subsystemVendor, 8).uppercased() + "sd" + hexDigits(facts.subsystemDevice, 8).uppercased()
            + "bc" + hexDigits(spec.classCode >> 16, 2).uppercased() + "sc" + hexDigits((spec.classCode >> 8) & 0xff, 2).uppercased()
            + "i" + hexDigits(spec.classCode & 0xff, 2).uppercased()
    }

    /// `uevent_show`: the driver core's `DRIVER=` (dev_uevent, while bound),
    /// then `pci_uevent` (drivers/pci/pci-driver.c), one variable a line.
    static func ueventText(_ device: Device) -> String {
        let spec = device.record.spec
        let facts = device.function
        var text = device.driver.map { "DRIVER=" + $0.name + "\n" } ?? ""
        text += "PCI_CLASS=" + String(spec.classCode, radix: 16, uppercase: true) + "\n"
        text += "PCI_ID=" + hexDigits(spec.vendorID, 4).uppercased() + ":" + hexDigits(spec.deviceID, 4).uppercased() + "\n"
        text += "PCI_SUBSYS_ID=" + hexDigits(facts.subsystemVendor, 4).uppercased() + ":"
            + hexDigits(facts.subsystemDevice, 4).uppercased() + "\n"
        text += "PCI_SLOT_NAME=" + device.address.description + "\n"
        return text + "MODALIAS=" + modalias(spec) + "\n"
    }

    /// `sriov_vf_msix_count_store` (drivers/pci/iov.c): EINVAL unless a
    /// non-negative int (kstrtoint); then EOPNOTSUPP, since no PF driver of
    /// the model has `sriov_set_msix_vec_count`.
    static func storeVFMSIXCount(_ buffer: UnsafeRawBufferPointer) -> Errno? {
        guard let value = KernelStrings.unsignedLong(buffer), value <= UInt64(Int32.max) else { return .invalidArgument }
        return .notSupported
    }

    /// `/sys/bus/pci/drivers_autoprobe` and `resource_alignment` (0644).
    func addBusSettings(in bus: Node) {
        let settings = busSettings
        tree.makeAttribute("drivers_autoprobe", in: bus, permissions: 0o644,
                           show: { .success(Array((settings.withLock { $0.driversAutoprobe } ? "1\n" : "0\n").utf8)) },
                           store: { buffer, _ in
                               // drivers_autoprobe_store (drivers/base/bus.c): "0..." turns it off, anything else on.
                               settings.withLock { $0.driversAutoprobe = buffer.first != UInt8(ascii: "0") }
                               return .success(buffer.count)
                           })
        tree.makeAttribute("resource_alignment", in: bus, permissions: 0o644,
                           show: { .success(settings.withLock { $0.resourceAlignment.map { Array(($0 + "\n").utf8) } ?? [] }) },
                           store: { buffer, _ in
                               // resource_alignment_store (drivers/pci/pci.c): EINVAL from PAGE_SIZE - 1 bytes;
                               // kept up to a NUL or newline, an empty string clears it.
                               guard buffer.count < Attribute.pageSize - 1 else { return .failure(.invalidArgument) }
                               let text = buffer.prefix { $0 != 0 }.prefix { $0 != UInt8(ascii: "\n") }
                               settings.withLock { $0.resourceAlignment = text.isEmpty ? nil : String(decoding: text, as: UTF8.self) }
                               return .success(buffer.count)
                           })
    }
}

/// What /sys/bus/pci keeps for the bus as a whole.
///
/// `drivers_autoprobe` is stored and shown only: the PCI core adds a
/// device with `device_attach()` (`pci_bus_add_device`, drivers/pci/bus.c),
/// which probes whatever the bus's setting, and the model registers no
/// drivers after boot (`bus_add_driver` is the other reader).
final class PCIBusSettings: Sendable {
    struct Values {
        var driversAutoprobe = true
        /// `resource_alignment_param`; nil: unset (the file reads empty).
        var resourceAlignment: String?
    }

    private let values = RankedMutex(.busSettings, Values())

    func withLock<R>(_ body: (inout Values) -> R) -> R { values.withLock { body(&$0) } }
}
