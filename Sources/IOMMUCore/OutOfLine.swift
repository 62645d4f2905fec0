/// An optional value kept out of line: 8 bytes in the enclosing value or
/// object instead of the value's own size, and nothing allocated while it
/// is nil. For large, rarely present members of per-device records (a
/// big machine has 100,000 devices; few are SR-IOV PFs).
@propertyWrapper
public struct OutOfLine<Wrapped: Sendable>: Sendable {
    private final class Box: Sendable {
        let value: Wrapped
        init(_ value: Wrapped) { self.value = value }
    }

    private var box: Box?

    public init(wrappedValue: Wrapped?) { box = wrappedValue.map(Box.init) }

    public var wrappedValue: Wrapped? {
        get { box?.value }
        set { box = newValue.map(Box.init) }
    }
}
