/// The kernel configuration and command line that decide the boot default
/// domain type (`iommu_subsys_init`, `iommu_setup` on x86).
public struct BootOptions: Sendable, Equatable {
    /// The `IOMMU_DEFAULT_*` Kconfig choice.
    public enum ConfigDefault: String, Sendable, CaseIterable {
        case lazy, strict, passthrough
    }

    /// Kconfig default; X86 and S390 default to lazy.
    public var configDefault: ConfigDefault
    /// `iommu.passthrough=`, `iommu=pt` / `iommu=nopt`: nil when absent.
    public var passthrough: Bool?
    /// `iommu.strict=`: nil when absent.
    public var strict: Bool?
    /// Memory encryption (SME/TDX) disables a configured passthrough default.
    public var memoryEncryption: Bool
    /// `intel_iommu=on` / `off` (`dmar_disabled`): nil when absent, and
    /// then on (`CONFIG_INTEL_IOMMU_DEFAULT_ON`, default y).
    public var intelIOMMU: Bool?
    /// `intel_iommu=sm_on` / `sm_off` (`intel_iommu_sm`): nil when absent,
    /// and then off (`CONFIG_INTEL_IOMMU_SCALABLE_MODE_DEFAULT_ON`, default n).
    public var intelScalableMode: Bool?
    /// `vfio.enable_unsafe_noiommu_mode=` (the vfio module's parameter on
    /// the command line): nil when absent, and then off.
    public var vfioNoIOMMU: Bool?

    /// Whether intel-iommu initialises its units (`intel_iommu_init` stops at
    /// `no_iommu || dmar_disabled`, registering none).
    public var intelIOMMUEnabled: Bool { intelIOMMU ?? true }

    public init(configDefault: ConfigDefault = .lazy, passthrough: Bool? = nil,
                strict: Bool? = nil, memoryEncryption: Bool = false) {
        self.configDefault = configDefault
        self.passthrough = passthrough
        self.strict = strict
        self.memoryEncryption = memoryEncryption
    }

    /// Reads the options the IOMMU core cares about from a kernel command
    /// line; later occurrences win, as with the kernel's early params.
    /// Values the kernel would reject (`kstrtobool` failures) are ignored.
    public init(commandLine: String, configDefault: ConfigDefault = .lazy, memoryEncryption: Bool = false) {
        self.init(configDefault: configDefault, memoryEncryption: memoryEncryption)
        for word in commandLine.split(whereSeparator: \.isWhitespace) {
            let parts = word.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let value = String(parts[1])
            switch parts[0] {
            case "iommu.passthrough": if let b = KernelStrings.bool(value) { passthrough = b }
            case "iommu.strict": if let b = KernelStrings.bool(value) { strict = b }
            case "vfio.enable_unsafe_noiommu_mode": if let b = KernelStrings.bool(value) { vfioNoIOMMU = b }
            case "intel_iommu":
                // drivers/iommu/intel/iommu.c intel_iommu_setup(): comma-separated
                // options matched by prefix (strncmp), in this order; later ones win.
                for option in value.split(separator: ",") {
                    if option.hasPrefix("on") { intelIOMMU = true }
                    else if option.hasPrefix("off") { intelIOMMU = false }
                    else if option.hasPrefix("sm_on") { intelScalableMode = true }
                    else if option.hasPrefix("sm_off") { intelScalableMode = false }
                }
            case "iommu":
                // arch/x86/kernel/pci-dma.c iommu_setup() matches prefixes (strncmp).
                for option in value.split(separator: ",") {
                    if option.hasPrefix("pt") { passthrough = true }
                    if option.hasPrefix("nopt") { passthrough = false }
                }
            default: break
            }
        }
    }

    /// The global default type before IOMMU drivers initialise, and the
    /// `iommu:` lines `iommu_subsys_init` prints.
    func subsystemDefault(profile: KernelProfile = .current) -> (type: DomainType, strict: Bool, log: [String]) {
        var log: [String] = []
        var identity: Bool
        if let passthrough {
            identity = passthrough
        } else {
            identity = configDefault == .passthrough
            if identity && memoryEncryption {
                log.append("iommu: Memory encryption detected - Disabling default IOMMU Passthrough")
                identity = false
            }
        }
        let isStrict = strict ?? (configDefault == .strict)
        let type: DomainType = identity ? .identity : (isStrict ? .dma : .dmaFQ)
        // v6.1 printed "%s %s": the space stays when the suffix is empty.
        func suffix(_ viaCommandLine: Bool) -> String {
            profile.bootLogSpacedSuffix ? (viaCommandLine ? " (set via kernel command line)" : " ")
                : (viaCommandLine ? " (set via kernel command line)" : "")
        }
        log.append("iommu: Default domain type: \(type.logName)\(suffix(passthrough != nil))")
        if !identity {
            log.append("iommu: DMA domain TLB invalidation policy: \(isStrict ? "strict" : "lazy") mode\(suffix(strict != nil))")
        }
        return (type, isStrict, log)
    }
}
