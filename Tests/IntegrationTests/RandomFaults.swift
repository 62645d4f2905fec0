import Control
import IOMMUCore
import SystemPackage
import TestSupport

/// Seeded `iommufs ctl inject` arguments: every fault point, each way of
/// arming one (`--once`, `--times N`, `--always`, with a probability), and
/// clearing.
enum RandomFault {
    /// Every errno the CLI takes by name, but those of 512 and more.
    /// Issue 10, bug 1: the server passes such an errno on to the kernel,
    /// which refuses the reply, and the writer never returns. Include them
    /// once that is fixed.
    static let errnos = SystemPackage.Errno.kernelNames.filter { SystemPackage.Errno(kernelName: $0)!.rawValue < 512 }

    /// The arguments after `ctl`, with the errno drawn from `errnos`.
    static func arguments(_ random: inout SplitMix64, errnos: [String] = errnos) -> [String] {
        let point = random.pick(FaultPoint.allCases).rawValue
        let errno = random.pick(errnos)
        switch random.next() % 10 {
        case 0, 1: return ["inject", "clear", point]
        case 2, 3, 4: return ["inject", point, errno, "--once"]
        case 5: return ["inject", point, errno]
        case 6, 7: return ["inject", point, errno, "--times", String(1 + random.next() % 4)]
        case 8: return ["inject", point, errno, "--always", "--probability", random.pick(["0.1", "0.5", "0.9", "1"])]
        default: return ["inject", point, errno, "--times", "3", "--probability", random.pick(["0", "0.3", "1"])]
        }
    }
}
