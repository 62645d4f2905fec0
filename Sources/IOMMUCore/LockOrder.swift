/// The lock order of iommufs, outermost first: the one authoritative list
/// (the `Machine` doc comment and the README point here). Every lock of
/// the model, the sysfs tree and the FUSE server is a `RankedMutex` of one
/// of these classes, and debug builds enforce the order: taking a lock
/// that is not below every lock the thread holds traps, naming both. The
/// model's part ports the kernel's order.
///
/// 0. Before any of them, while a server mounts: the flock on the mount
///    point's parent directory (`MountPoint`), between processes.
/// 1. `openFile`: `OpenAttribute.state`, kernfs' `of->mutex`: the reads
///    and writes of one open attribute file. A store runs its whole model
///    operation under it, a show its model read.
/// 2. `rescanRemove`: `Machine.rescanRemove` (`pci_rescan_remove_lock`):
///    hot-plug: remove, rescan, slot power, SR-IOV.
/// 3. `vfio`: `Machine.vfio`: VFIO containers and open group files.
/// 4. `device`: `Device.lock` (`device_lock`): binding, reset, removal and
///    the knobs of one device. The only nesting: a VFIO attach holds every
///    member of its group, in address order.
/// 5. `population`: `Directory.pending`: a lazily populated sysfs directory
///    while its entries are made from the model. A driver binding under
///    its device lock adds links, which may populate a directory; a
///    population may populate directories below it (ancestors first) and
///    reads the model only through the locks below.
/// 6. `group`: `IOMMUGroup.state` (`group->mutex`), one group at a time.
/// 7. `registry`: `Machine.registry`: group ids and labels, the present
///    devices by address and in probe order.
/// 8. Leaf locks, taken under any of the above and holding no other lock,
///    not even another leaf:
///    - model: `Device.groupRef`, `BoundDevices.devices` (a driver's
///      `klist_devices`), `PCIBus.placements`, `Machine.dynamicIDs`,
///      `Machine.observerSlot`, `Machine.resetsRunning`, `Machine.noIOMMUMode`,
///      `Domain.groupsByUnit`, `FaultInjector.armed`,
///      `KernelLog.ring`, `KernelLog.limiters`, `EventBus.subscribers`;
///    - sysfs: `Directory.entries`, `InodeTable.allocation`,
///      `SysfsTree.invalidator`, `Node.owners`, `MembershipGeneration.texts`,
///      `ReservedRegionsFile.cached`, `MachineTree.knownGroupCount`,
///      `PCIConfigSpace.image`, `PCIBusSettings.values`, `RuntimePower.set`;
///    - server: `CacheNotifier.queue` and `.thread`, `LibfuseLog.logger`,
///      and `NotificationProgress`'s pthread mutex (with its condition; a
///      writer waits on it holding nothing); the daemon's log handler
///      (swift-log) takes none of these, and may be called under model
///      locks (the kernel log's sink, `--dmesg`);
///    - control: `ControlServer.acceptor`, `EventStream.queue` (an event
///      subscriber, so possibly under a group mutex).
///
/// Without a lock: a device's bound driver and enable count, a node's mode
/// and lookup count, the inode table's slots, slot flags and domain-id
/// counters are atomics. The FUSE read path (lookup, getattr, readlink,
/// readdir) takes a directory's `entries` and, once per directory, its
/// population; a read adds its file's `openFile` and whatever its show
/// reads (a group's mutex for `type`): never a lock shared by all requests.
///
/// Rules that go with the order:
/// - no lock is taken per device in a loop over devices: the loop runs
///   under one lock or over a snapshot taken under one (a group's members
///   under its mutex, the present devices under the registry, a driver's
///   devices under its list's lock), as the kernel walks `group->devices`
///   or a driver's klist;
/// - the observer (the sysfs view) is called with at most `openFile`,
///   `rescanRemove` and one device lock held, never a group mutex or the
///   registry;
/// - event subscribers and the kernel log's sink may run under a group
///   mutex: they only record;
/// - the cache notifier's thread sends kernel notifications holding no
///   lock, and a request handler never sends one.
public enum LockClass: Sendable, CustomStringConvertible {
    case openFile
    case rescanRemove
    case vfio
    case device
    case population
    case group
    case registry
    // Leaves of the model.
    case deviceGroup, boundDevices, busResources, dynamicIDs, observer, resetsRunning, noIOMMUMode, domainUnits, faults, kernelLog,
         ratelimits, eventSubscribers
    // Leaves of the sysfs tree.
    case directoryEntries, inodeAllocation, invalidator, nodeOwners, regionTexts, regionsCache, groupCount,
         configImage, busSettings, runtimePower
    // Leaves of the server and the control socket.
    case notifierQueue, notifierThread, libfuseLogger, controlAcceptor, eventStream

    /// The position in the order; every leaf shares the last one.
    var level: Int {
        switch self {
        case .openFile: 1
        case .rescanRemove: 2
        case .vfio: 3
        case .device: 4
        case .population: 5
        case .group: 6
        case .registry: 7
        default: 8
        }
    }

    /// Whether two locks of the class may be held at once: the inner one
    /// with a greater key (a device's address, a directory's depth).
    var nestsByKey: Bool { self == .device || self == .population }

    /// The lock's name in the code, for a lock-order report.
    public var description: String {
        switch self {
        case .openFile: "OpenAttribute.state"
        case .rescanRemove: "Machine.rescanRemove"
        case .vfio: "Machine.vfio"
        case .device: "Device.lock"
        case .population: "Directory.pending"
        case .group: "IOMMUGroup.state"
        case .registry: "Machine.registry"
        case .deviceGroup: "Device.groupRef"
        case .boundDevices: "BoundDevices.devices"
        case .busResources: "PCIBus.placements"
        case .dynamicIDs: "Machine.dynamicIDs"
        case .observer: "Machine.observerSlot"
        case .resetsRunning: "Machine.resetsRunning"
        case .noIOMMUMode: "Machine.noIOMMUMode"
        case .domainUnits: "Domain.groupsByUnit"
        case .faults: "FaultInjector.armed"
        case .kernelLog: "KernelLog.ring"
        case .ratelimits: "KernelLog.limiters"
        case .eventSubscribers: "EventBus.subscribers"
        case .directoryEntries: "Directory.entries"
        case .inodeAllocation: "InodeTable.allocation"
        case .invalidator: "SysfsTree.invalidator"
        case .nodeOwners: "Node.owners"
        case .regionTexts: "MembershipGeneration.texts"
        case .regionsCache: "ReservedRegionsFile.cached"
        case .groupCount: "MachineTree.knownGroupCount"
        case .configImage: "PCIConfigSpace.image"
        case .busSettings: "PCIBusSettings.values"
        case .runtimePower: "RuntimePower.set"
        case .notifierQueue: "CacheNotifier.queue"
        case .notifierThread: "CacheNotifier.thread"
        case .libfuseLogger: "LibfuseLog.logger"
        case .controlAcceptor: "ControlServer.acceptor"
        case .eventStream: "EventStream.queue"
        }
    }
}
