/// A Linux capability, numbered as in `include/uapi/linux/capability.h`.
public enum Capability: Int, Sendable, CaseIterable {
    case dacOverride = 1
    case sysRawio = 17
    case sysAdmin = 21
}

/// Who is calling: what the kernel's `capable()` would answer for the task
/// that performs a store.
///
/// The kernel checks capabilities of the *writing* task at write time (not
/// of the opener), against the initial user namespace.
public protocol Credentials: Sendable {
    func capable(_ capability: Capability) -> Bool
}

/// A task with every capability in the initial user namespace (root).
public struct FullyPrivileged: Credentials {
    public init() {}
    public func capable(_ capability: Capability) -> Bool { true }
}

/// A task with exactly the listed capabilities.
public struct CapabilitySet: Credentials {
    public var capabilities: Set<Capability>
    public init(_ capabilities: Set<Capability>) { self.capabilities = capabilities }
    public func capable(_ capability: Capability) -> Bool { capabilities.contains(capability) }
}
