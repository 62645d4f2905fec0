import Control
import IOMMUCore
import SystemPackage
import TestSupport

/// Seeded `iommufs ctl inject` arguments: every fault point, each way of
/// arming one (`--once`, `--times N`, `--always`, with a probability), and
/// clearing.
enum RandomFault {
    /// Every errno the CLI takes by name, the kernel's internal ones too.
    static let errnos = SystemPackage.Errno.kernelNames

    /// The arguments after `ctl`, with the errno drawn from `errnos`; now
    /// and then a short stall instead of a failure.
    static func arguments(_ random: inout SplitMix64, errnos: [String] = errnos) -> [String] {
        let point = random.pick(FaultPoint.allCases).rawValue
        let effect = random.next() % 8 == 0 ? ["--stall", "\(1 + random.next() % 5)ms"] : [random.pick(errnos)]
        switch random.next() % 10 {
        case 0, 1: return ["inject", "clear", point]
        case 2, 3, 4: return ["inject", point] + effect + ["--once"]
        case 5: return ["inject", point] + effect
        case 6, 7: return ["inject", point] + effect + ["--times", String(1 + random.next() % 4)]
        case 8: return ["inject", point] + effect + ["--always", "--probability", random.pick(["0.1", "0.5", "0.9", "1"])]
        default: return ["inject", point] + effect + ["--times", "3", "--skip", String(random.next() % 3)]
        }
    }

    /// Whether the server refuses `arguments` (EINVAL, with a message), as
    /// `FaultInjector.arm` does: a failure at `reset-done`, which cannot
    /// fail, and a kernel-internal errno anywhere but EPROBE_DEFER at `probe`.
    static func isRefused(_ arguments: [String]) -> Bool {
        guard arguments.count > 2, arguments[1] != "clear", arguments[2] != "--stall",
              let point = FaultPoint(rawValue: arguments[1]), let errno = SystemPackage.Errno(kernelName: arguments[2]) else { return false }
        if !point.canFail { return true }
        return errno.isKernelInternal && !(point == .probe && arguments[2] == "EPROBE_DEFER")
    }
}
