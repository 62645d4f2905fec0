import IOMMUCore
import Sysfs

/// Frees what one input built. A machine and its tree hold each other
/// (the tree's closures hold the machine, the machine its observer), a
/// node its parent and a directory its entries, a group its members and a
/// device its group: nothing a server ever frees, but a fuzzer runs
/// millions of inputs in one process.
enum Teardown {
    /// The tree taken apart as a removal does, and let go by its machine
    /// (released on its own).
    static func release(_ view: MachineTree) {
        view.machine.setObserver(nil)
        for child in view.tree.root.directory?.snapshot() ?? [] { view.tree.remove(child) }
    }

    /// Every device removed (`remove` of each top-level device, which takes
    /// what is behind it), with no fault left to fire on the way.
    static func release(_ machine: Machine) {
        for point in FaultPoint.allCases { machine.faults.disarm(point) }
        for device in machine.devices.reversed() where device.isPresent { machine.remove(device) }
    }
}
