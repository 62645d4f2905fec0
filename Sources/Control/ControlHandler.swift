import IOMMUCore
import SystemPackage
import Topology

/// Runs the requests that get one reply (everything but `trace`) against
/// the machine, through the same calls the kernel's VFIO, iommufd and
/// DMA-mapping paths make.
public struct ControlHandler: Sendable {
    public let machine: Machine
    /// The text of the document the machine booted from, for `dump`.
    let document: DocumentText

    public init(machine: Machine, document: DocumentText) {
        self.machine = machine
        self.document = document
    }

    /// What the server does with one request line.
    public enum Answer: Equatable {
        /// Send this reply, `{"ok":true,...}` or `{"ok":false,...}`.
        case reply(JSON)
        /// Acknowledge, then stream events (`count` of them, nil: until the
        /// client hangs up).
        case trace(count: Int?)
    }

    /// Decodes `line` (one line without its newline) and runs it.
    public func answer(_ line: [UInt8]) -> Answer {
        do throws(ControlFailure) {
            let request = try Self.decode(line)
            if case .trace(let count) = request { return .trace(count: count) }
            return .reply(ControlReply.success(try perform(request)))
        } catch {
            return .reply(ControlReply.failure(error))
        }
    }

    private static func decode(_ line: [UInt8]) throws(ControlFailure) -> ControlRequest {
        let json: JSON
        do {
            json = try JSON.parse(line)
        } catch {
            throw .badRequest("malformed JSON at \(error)")
        }
        return try ControlRequest(json: json)
    }

    /// The members of the success reply, or the failure.
    func perform(_ request: ControlRequest) throws(ControlFailure) -> [(ControlReply.Key, JSON)] {
        switch request {
        case .vfioOpenContainer(let container):
            try check(machine.openVFIOContainer(container), "vfio open of container \(container)")
        case .vfioCloseContainer(let container):
            try check(machine.closeVFIOContainer(container), "vfio close of container \(container)")
        case .vfioAPIVersion(let container):
            return [(.value, .integer(try value(machine.vfioAPIVersion(of: container), "VFIO_GET_API_VERSION on container \(container)")))]
        case .vfioCheckExtension(let container, let ext):
            let answer = try value(machine.vfioCheckExtension(ext, of: container), "VFIO_CHECK_EXTENSION(\(ext.name)) on container \(container)")
            return [(.value, .integer(answer))]
        case .vfioSetIOMMU(let container, let ext):
            try check(machine.setVFIOIOMMU(container, ext), "VFIO_SET_IOMMU(\(ext.name)) on container \(container)")
        case .vfioMapDMA(let container, let iova, let size):
            try check(machine.mapVFIODMA(container, iova: iova, size: size),
                      "VFIO_IOMMU_MAP_DMA of \(size) bytes at IOVA 0x\(String(iova, radix: 16)) on container \(container)")
        case .vfioOpenGroup(let id):
            try check(machine.openVFIOGroup(try group(id)), "vfio open of group \(id)")
        case .vfioGroupStatus(let id):
            let status = try value(machine.vfioGroupStatus(try group(id)), "VFIO_GROUP_GET_STATUS of group \(id)")
            return [(.viable, .bool(status.viable)), (.containerSet, .bool(status.containerSet))]
        case .vfioAttach(let container, let id):
            try check(machine.attachVFIOGroup(try group(id), to: container), "vfio attach of group \(id) to container \(container)")
        case .vfioDetach(let id):
            try check(machine.detachVFIOGroup(try group(id)), "vfio detach of group \(id)")
        case .vfioGetDeviceFD(let id, let address):
            try check(machine.openVFIODevice(address, in: try group(id)), "VFIO_GROUP_GET_DEVICE_FD of \(address) in group \(id)")
        case .vfioRelease(let id):
            try check(machine.releaseVFIOGroup(try group(id)), "vfio release of group \(id)")
        case .iommufdBind(let context, let address):
            try check(machine.bindIOMMUFD(try device(address), context: context), "iommufd bind of \(address) to context \(context)")
        case .iommufdUnbind(let context, let address):
            try check(machine.unbindIOMMUFD(try device(address), context: context), "iommufd unbind of \(address) from context \(context)")
        case .dmaMap(let address):
            try check(machine.mapDMA(try device(address)), "dma-map of \(address)")
        case .inject(let point, let fault):
            do {
                try machine.faults.arm(point, fault)
            } catch .internalErrno(let errno, let point) {
                throw ControlFailure(.invalidArgument, "\(errno.kernelName) is internal to the kernel: no \(point.rawValue) failure "
                    + "reaches user space with it, and a FUSE reply cannot carry errno \(errno.rawValue)")
            } catch {
                throw ControlFailure(.invalidArgument, error.description)
            }
        case .clearFault(let point):
            machine.faults.disarm(point)
        case .listFaults:
            return [(.faults, .array(machine.faults.armedFaults.map { .object(FaultCoding.members($0.point, $0.fault)) }))]
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

    private func value<T>(_ result: Result<T, Errno>, _ what: @autoclosure () -> String) throws(ControlFailure) -> T {
        switch result {
        case .success(let v): return v
        case .failure(let error): throw .failed(what(), error)
        }
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
