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
        // capget first: it is the cheaper call, and a caller without any
        // capability needs no namespace check.
        var effective: UInt64 = 0
        guard tid > 0, let serverNamespace, cfuse_effective_caps(tid, &effective) == 0, effective != 0,
              NamespaceIdentity(ofTask: tid) == serverNamespace else { return 0 }
        return effective
    }
}

/// A user namespace, identified by its inode number in nsfs (all namespaces
/// live on the one nsfs superblock, so the number alone identifies one).
///
/// It is read with readlink(2) of `/proc/<tid>/ns/user` ("user:[4026531837]"),
/// relative to a descriptor of /proc kept open: this runs on every write,
/// and readlink names the namespace without opening it, which is less than
/// half the cost of stat(2) following the link (measured 2.2 µs against
/// 5.3 µs).
struct NamespaceIdentity: Equatable, Sendable {
    let inode: UInt64

    /// /proc, opened once; -1 if it could not be.
    private static let proc: Int32 = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC)

    /// The user namespace of thread `tid`, or of this process for nil; nil
    /// when the task is gone or its namespace cannot be inspected.
    init?(ofTask tid: pid_t?) {
        let inode: UInt64? = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 96) { scratch in
            let path = scratch.baseAddress!
            let relative = Self.proc >= 0
            Self.writeNamespacePath(of: tid, relative: relative, into: scratch)
            let target = path + 48
            let n = relative ? readlinkat(Self.proc, path, target, 47) : readlink(path, target, 47)
            guard n > 0 else { return nil }
            return Self.parseInode(UnsafeRawBufferPointer(start: target, count: n))
        }
        guard let inode else { return nil }
        self.inode = inode
    }

    /// The number in "user:[N]".
    private static func parseInode(_ text: UnsafeRawBufferPointer) -> UInt64? {
        guard let open = text.firstIndex(of: UInt8(ascii: "[")) else { return nil }
        var value: UInt64 = 0
        var digits = 0
        for byte in text[(open + 1)...] {
            if byte == UInt8(ascii: "]") { return digits > 0 ? value : nil }
            guard byte >= 48, byte <= 57 else { return nil }
            value = value &* 10 &+ UInt64(byte - 48)
            digits += 1
        }
        return nil
    }

    /// Writes "[/proc/]self/ns/user" or "[/proc/]<tid>/ns/user",
    /// NUL-terminated, without building a Swift String (this runs on the
    /// write path).
    private static func writeNamespacePath(of tid: pid_t?, relative: Bool, into path: UnsafeMutableBufferPointer<CChar>) {
        var length = 0
        func append(_ bytes: StaticString) {
            for byte in UnsafeBufferPointer(start: bytes.utf8Start, count: bytes.utf8CodeUnitCount) {
                path[length] = CChar(bitPattern: byte)
                length += 1
            }
        }
        if !relative { append("/proc/") }
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
