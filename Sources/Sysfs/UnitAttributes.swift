import IOMMUCore
import SystemPackage

extension MachineTree {
    /// The attributes of an IOMMU unit's class device besides `devices/`
    /// and `subsystem`: `uevent`, the runtime-PM `power/` group every
    /// device gets (`dpm_sysfs_add`), and intel-iommu's `intel-iommu/`
    /// group when the topology gives the unit's registers.
    func addUnitAttributes(_ unit: IOMMUUnit, in dir: Node) {
        // dev_uevent adds nothing for a class device without a bus or type.
        tree.makeAttribute("uevent", in: dir, permissions: 0o644, show: { .success([]) },
                           store: { [machine] buffer, _ in
                               Uevent.store(buffer, path: unit.sysfsPath, devicePrefix: "iommu \(unit.name)", log: machine.log)
                           })
        RuntimePower().add(to: tree.makeDirectory("power", in: dir), in: tree)
        guard let registers = unit.registers else { return }
        let group = tree.makeDirectory("intel-iommu", in: dir)
        let constants = [
            ("address", String(registers.address, radix: 16)),
            ("cap", String(registers.capability, radix: 16)),
            ("ecap", String(registers.extendedCapability, radix: 16)),
            ("version", registers.versionText),
            ("domains_supported", String(registers.domainsSupported)),
        ]
        for (name, text) in constants {
            tree.makeAttribute(name, in: group, permissions: 0o444, .constant(text + "\n"))
        }
        tree.makeAttribute("domains_used", in: group, permissions: 0o444,
                           show: { [subsystem = machine.subsystem] in
                               .success(Array("\(subsystem.domainsUsed(on: unit.name))\n".utf8))
                           })
    }
}

/// The `power/` group of a device without runtime PM (drivers/base/power/
/// sysfs.c): runtime PM is disabled, so the status is `unsupported`;
/// `control` and `async` keep what is written to them.
final class RuntimePower: Sendable {
    /// The two settable words, each one of two (`sysfs_streq` in
    /// `control_store` and `async_store`; anything else is EINVAL).
    enum Switch: Sendable, CaseIterable {
        /// `auto`, or `on` (pm_runtime_forbid, which takes a usage reference).
        case control
        /// `disabled` or `enabled`.
        case async

        var words: [String] { self == .control ? ["auto", "on"] : ["disabled", "enabled"] }
        var name: String { self == .control ? "control" : "async" }
    }

    /// The switches that are set to their second word.
    private let set = RankedMutex<Set<Switch>>(.runtimePower, [])

    func add(to dir: Node, in tree: SysfsTree) {
        let constants = [("runtime_active_kids", "0"), ("runtime_active_time", "0"), ("runtime_enabled", "disabled"),
                         ("runtime_status", "unsupported"), ("runtime_suspended_time", "0")]
        for (name, text) in constants {
            tree.makeAttribute(name, in: dir, permissions: 0o444, .constant(text + "\n"))
        }
        tree.makeAttribute("runtime_usage", in: dir, permissions: 0o444,
                           show: { [self] in .success(Array((isSet(.control) ? "1\n" : "0\n").utf8)) })
        for item in Switch.allCases {
            tree.makeAttribute(item.name, in: dir, permissions: 0o644,
                               show: { [self] in .success(Array((item.words[isSet(item) ? 1 : 0] + "\n").utf8)) },
                               store: { [self] buffer, _ in
                                   guard let index = Self.choice(buffer, item.words) else { return .failure(.invalidArgument) }
                                   set.withLock { if index == 1 { $0.insert(item) } else { $0.remove(item) } }
                                   return .success(buffer.count)
                               })
        }
        // autosuspend_delay_ms_show/_store: EIO without use_autosuspend.
        tree.makeAttribute("autosuspend_delay_ms", in: dir, permissions: 0o644,
                           show: { .failure(.ioError) }, store: { _, _ in .failure(.ioError) })
    }

    private func isSet(_ item: Switch) -> Bool { set.withLock { $0.contains(item) } }

    /// The index of the word `buffer` holds, compared as `sysfs_streq`
    /// does (up to a NUL, one trailing newline allowed on either side).
    private static func choice(_ buffer: UnsafeRawBufferPointer, _ words: [String]) -> Int? {
        var text = Array(buffer.prefix { $0 != 0 })
        if text.last == 0x0a { text.removeLast() }
        return words.firstIndex { Array($0.utf8) == text }
    }
}
