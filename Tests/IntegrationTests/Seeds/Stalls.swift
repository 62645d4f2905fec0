import Foundation
import Glibc
import Testing

/// Helpers of the seed tests: a stall armed through `ctl inject` is the
/// window a test places a concurrent request in, and `inject --list` says
/// when the stalled operation has reached its point (the shot is gone).
extension MountedMachine {
    /// `ctl inject POINT --stall MSms --once [--skip N]`.
    func armStall(_ point: String, ms: Int, skip: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try ctlOK("inject", point, "--stall", "\(ms)ms", "--once", "--skip", String(skip), sourceLocation: sourceLocation)
    }

    /// Waits until nothing is armed at `point` any more: the operation that
    /// fired it is inside its stall now.
    func waitUntilFired(_ point: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let armed = try ctlOK("inject", "--list", sourceLocation: sourceLocation)
            if !armed.split(separator: "\n").contains(where: { $0.hasPrefix(point + " ") }) { return }
            usleep(2_000)
        }
        Issue.record("nothing reached \(point) within 20 s", sourceLocation: sourceLocation)
    }

    /// The group ids of `ctl dump`'s VFIO containers, by container name.
    func containerDomains() throws -> String? {
        try dumpState()["vfio_containers"]?.compactText
    }
}

/// Work started on a thread of its own, waited for later with a limit (a
/// request that never returns fails the test instead of hanging it).
final class Background<Value: Sendable>: Sendable {
    private let result = BoundedResult<Value>()

    init(_ work: @escaping @Sendable () -> Value) {
        let result = self.result
        Thread { result.set(work()) }.start()
    }

    /// The value, or nil if the work has not ended within `limit`.
    func wait(upTo limit: Duration = .seconds(20)) -> Value? { result.wait(upTo: limit) }

    /// Whether the work has ended by now.
    var isDone: Bool { result.wait(upTo: .zero) != nil }
}

extension MountedMachine {
    /// Arms a stall of `ms` at `point`, starts `operation`, waits until it
    /// is inside the stall, starts `request` and checks 200 ms later that
    /// the request is still waiting: the operation holds what the request
    /// needs. Both are returned to be waited for.
    func expectWaiting<A: Sendable, B: Sendable>(at point: String, ms: Int = 800,
                                                 while operation: @escaping @Sendable () -> A,
                                                 _ request: @escaping @Sendable () -> B,
                                                 sourceLocation: SourceLocation = #_sourceLocation) throws -> (Background<A>, Background<B>) {
        try armStall(point, ms: ms, sourceLocation: sourceLocation)
        let first = Background(operation)
        try waitUntilFired(point, sourceLocation: sourceLocation)
        let second = Background(request)
        usleep(200_000)
        #expect(!second.isDone, "the request did not wait for the operation stalled at \(point)", sourceLocation: sourceLocation)
        return (first, second)
    }

    /// `iommufs ctl` with `arguments`, as a closure for `expectWaiting`.
    func ctlRun(_ arguments: String...) -> @Sendable () -> CommandResult {
        let root = root
        return { run(MountedMachine.binary, ["ctl", "--mount", root] + arguments) }
    }
}
