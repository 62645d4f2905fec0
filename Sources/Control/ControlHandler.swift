import IOMMUCore
import SystemPackage
import Topology

/// Runs the requests that get one reply (everything but `trace`) against
/// the machine, through the same calls the kernel's VFIO, iommufd and
/// DMA-mapping paths make.
struct ControlHandler: Sendable {
    let machine: Machine
    /// The text of the document the machine booted from, for `dump`.
    let document: DocumentText

    /// The members of the success reply, or the failure.
    func perform(_ request: ControlRequest) throws(ControlFailure) -> [(ControlReply.Key, JSON)] {
        switch request {
        case .vfioAttach(let container, let id):
            try check(machine.attachVFIOGroup(try group(id), to: container), "vfio attach of group \(id) to container \(container)")
        case .vfioDetach(let id):
            try check(machine.detachVFIOGroup(try group(id)), "vfio detach of group \(id)")
        case .iommufdBind(let context, let address):
            try check(machine.bindIOMMUFD(try device(address), context: context), "iommufd bind of \(address) to context \(context)")
        case .iommufdUnbind(let context, let address):
            try check(machine.unbindIOMMUFD(try device(address), context: context), "iommufd unbind of \(address) from context \(context)")
        case .dmaMap(let address):
            try check(machine.mapDMA(try device(address)), "dma-map of \(address)")
        case .inject(let point, let fault):
            machine.faults.arm(point, fault)
        case .clearFault(let point):
            machine.faults.disarm(point)
        case .dmesg(let clear):
            let lines = clear ? machine.log.readAndClear() : machine.log.lines
            return [(.lines, .array(lines.map { .string($0.description) }))]
        case .dump:
            do throws(TopologyError) {
                return [(.document, try document.dump(machine))]
            } catch {
                throw ControlFailure(.staleNFSFileHandle, error.description)
            }
        case .trace:
            preconditionFailure("a trace streams; ControlSession runs it")
        }
        return []
    }

    private func check(_ error: Errno?, _ what: @autoclosure () -> String) throws(ControlFailure) {
        if let error { throw .failed(what(), error) }
    }

    private func group(_ id: Int) throws(ControlFailure) -> IOMMUGroup {
        guard let group = machine.group(id: id) else { throw ControlFailure(.noSuchFileOrDirectory, "there is no IOMMU group \(id)") }
        return group
    }

    private func device(_ address: PCIAddress) throws(ControlFailure) -> Device {
        guard let device = machine.device(at: address) else { throw ControlFailure(.noDevice, "there is no PCI device \(address)") }
        return device
    }
}
