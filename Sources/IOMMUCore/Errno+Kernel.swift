import SystemPackage

extension Errno {
    /// ENODEV. swift-system spells it `operationNotSupportedByDevice` after
    /// BSD's text; in the kernel it means "no such device".
    public static var noDevice: Errno { .operationNotSupportedByDevice }

    /// EOPNOTSUPP (the same number as ENOTSUP on Linux).
    public static var operationNotSupported: Errno { .notSupported }

    /// The first of the kernel's internal codes (ERESTARTSYS, 512, in
    /// include/linux/errno.h): from here up (EPROBE_DEFER = 517, ENOTSUPP =
    /// 524, ...) a code means something only inside the kernel. FUSE refuses
    /// a reply that carries one (`fuse_dev_do_write`: `oh.error <=
    /// -ERESTARTSYS` is EINVAL), so the request it answers would never end.
    public static let firstKernelInternal: Int32 = 512

    /// Whether this is one of the kernel's internal codes (`firstKernelInternal`
    /// and up), which the kernel maps before they reach a system call's caller.
    public var isKernelInternal: Bool { rawValue >= Self.firstKernelInternal }
}
