/// Receives the tree's structural changes so that a server can tell the
/// kernel to drop what it cached about them (dentries, attributes, link
/// targets, listings).
///
/// Called synchronously by `SysfsTree` right after the change, from the
/// thread that made it, which may be a request handler; an implementation
/// must only record the change and act on it elsewhere (the kernel may be
/// waiting on the very request that caused it).
public protocol CacheInvalidator: AnyObject, Sendable {
    /// `name` appeared in directory `parent`.
    func entryAdded(parent: UInt64, name: String)
    /// `name` (inode `child`) left directory `parent`.
    func entryRemoved(parent: UInt64, child: UInt64, name: String)
}
