import SystemPackage

extension Errno {
    /// ENODEV. swift-system spells it `operationNotSupportedByDevice` after
    /// BSD's text; in the kernel it means "no such device".
    public static var noDevice: Errno { .operationNotSupportedByDevice }

    /// EOPNOTSUPP (the same number as ENOTSUP on Linux).
    public static var operationNotSupported: Errno { .notSupported }
}
