import SystemPackage

/// A failed control request, as the protocol reports it and `iommufs ctl`
/// prints it: the errno's name and what failed.
public struct ControlFailure: Error, Equatable, CustomStringConvertible {
    /// `EPERM`, `ENOMEM`, ... (see `Errno.kernelName`).
    public var errnoName: String
    public var message: String

    public init(_ errno: Errno, _ message: String) {
        self.init(errnoName: errno.kernelName, message: message)
    }

    init(errnoName: String, message: String) {
        self.errnoName = errnoName
        self.message = message
    }

    /// A model operation's errno, described as `what` with the errno's text:
    /// `vfio attach of group 3 to container c1: Operation not permitted`.
    static func failed(_ what: String, _ errno: Errno) -> ControlFailure {
        ControlFailure(errno, what + ": " + errno.description)
    }

    /// A request the server cannot make sense of (EINVAL).
    static func badRequest(_ reason: String) -> ControlFailure {
        ControlFailure(.invalidArgument, "bad request: " + reason)
    }

    /// `EPERM: vfio attach of group 3 to container c1: Operation not permitted`
    public var description: String { errnoName + ": " + message }
}
