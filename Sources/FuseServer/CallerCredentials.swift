import CFuse
import Glibc
import IOMMUCore
import Synchronization

/// The task that sent one FUSE request, judged as the kernel's `capable()`
/// judges the task writing to a sysfs file: it must hold the capability in
/// its effective set *and* live in the initial user namespace (root in a
/// child user namespace is never capable there).
///
/// The server's own user namespace stands in for the initial one, so that a
/// server started inside `unshare -Ur` treats its namespace's root as root.
///
/// The capability set is read lazily, only when a store asks, and at most
/// once per request. A vanished task or a failed `capget` means no
/// capabilities.
final class RequestCaller: Credentials {
    /// Thread id of the requester, in this server's pid namespace (0 when the
    /// requester is not visible there).
    private let tid: pid_t
    private let serverNamespace: NamespaceIdentity?
    /// 0 until first asked; then `Self.resolved` plus the capability bits the
    /// caller holds in the server's user namespace.
    private let answer = Atomic<UInt64>(0)
    /// Above CAP_LAST_CAP (40), so it never collides with a capability bit.
    private static let resolved: UInt64 = 1 << 63

    init(of req: fuse_req_t?, serverNamespace: NamespaceIdentity?) {
        self.tid = fuse_req_ctx(req).pointee.pid
        self.serverNamespace = serverNamespace
    }

    func capable(_ capability: Capability) -> Bool {
        var bits = answer.load(ordering: .relaxed)
        if bits == 0 {
            bits = Self.resolved | capabilitiesInServerNamespace()
            answer.store(bits, ordering: .relaxed)
        }
        return bits & (1 << UInt64(capability.rawValue)) != 0
    }

    private func capabilitiesInServerNamespace() -> UInt64 {
        // capget(pid 0) would describe this server, not the caller.
        guard tid > 0, let serverNamespace,
              NamespaceIdentity(ofTask: tid) == serverNamespace else { return 0 }
        var effective: UInt64 = 0
        return cfuse_effective_caps(tid, &effective) == 0 ? effective : 0
    }
}

/// A user namespace, identified as `/proc/PID/ns/user` identifies it: by the
/// device and inode of the nsfs file.
struct NamespaceIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64

    /// The user namespace of thread `tid`, or of this process for nil; nil
    /// when the task is gone or its namespace cannot be inspected.
    init?(ofTask tid: pid_t?) {
        var st = stat()
        let found = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 40) { path in
            Self.writeNamespacePath(of: tid, into: path)
            return stat(path.baseAddress!, &st) == 0
        }
        guard found else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// Writes "/proc/self/ns/user" or "/proc/<tid>/ns/user", NUL-terminated,
    /// without building a Swift String (this runs on the write path).
    private static func writeNamespacePath(of tid: pid_t?, into path: UnsafeMutableBufferPointer<CChar>) {
        var length = 0
        func append(_ bytes: StaticString) {
            for byte in UnsafeBufferPointer(start: bytes.utf8Start, count: bytes.utf8CodeUnitCount) {
                path[length] = CChar(bitPattern: byte)
                length += 1
            }
        }
        append("/proc/")
        if let tid {
            var digits = 1
            var rest = tid
            while rest >= 10 { rest /= 10; digits += 1 }
            rest = tid
            for i in stride(from: length + digits - 1, through: length, by: -1) {
                path[i] = CChar(48 + rest % 10)
                rest /= 10
            }
            length += digits
        } else {
            append("self")
        }
        append("/ns/user")
        path[length] = 0
    }
}
