/// The entry points that take outside input, each as a function of one
/// fuzz input that checks what must hold beyond "it did not crash".
///
/// `iommufs-fuzz` runs them under libFuzzer (`make fuzz-inputs`) or on
/// given files; the corpus test runs every committed input through its
/// target on each `make test`.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A machine description, as `--topology FILE` reads it: decoded,
    /// booted with its state restored, its sysfs tree built (see
    /// `DecoderTarget`).
    case decoder
    /// Control request lines against a booted machine (see `ControlTarget`).
    case control
    /// Writes to the sysfs tree's writable attributes of a booted machine,
    /// with control requests (fault injection, VFIO) between them (see
    /// `StoreTarget`).
    case store

    /// Runs one input; what it broke (empty: every property held).
    public func run(_ input: [UInt8]) -> [Finding] {
        switch self {
        case .decoder: DecoderTarget.run(input)
        case .control: ControlTarget.run(input)
        case .store: StoreTarget.run(input)
        }
    }
}

/// A property that a fuzz input broke, said in one sentence.
public struct Finding: Error, Equatable, CustomStringConvertible {
    public let description: String

    init(_ description: String) { self.description = description }

    /// The same finding, said to happen at `step`.
    func at(_ step: String) -> Finding { Finding(step + ": " + description) }
}
