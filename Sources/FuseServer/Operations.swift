import CFuse
import Glibc
import Sysfs

// The low-level request handlers, one per FUSE operation, in the style of
// libfuse's low-level examples.
//
// They are global functions (not closures, and not in main.swift) so that
// they carry no actor isolation: libfuse calls them on its own worker
// threads, where a MainActor isolation check would trap. Every handler
// replies exactly once on every path: an unanswered request hangs its caller.
//
// Operations left out on purpose answer ENOSYS, which the kernel remembers:
// getxattr/listxattr (saves a request per write once the kernel stops asking
// for `security.capability`), access (never sent with default_permissions),
// flush (the opens set noflush), readdirplus (not negotiated).

enum Operations {
    /// The handler table given to `fuse_session_new`.
    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = opInit
        ops.lookup = opLookup
        ops.forget = opForget
        ops.forget_multi = opForgetMulti
        ops.getattr = opGetattr
        ops.setattr = opSetattr
        ops.readlink = opReadlink
        ops.open = opOpen
        ops.read = opRead
        ops.write = opWrite
        ops.release = opRelease
        ops.opendir = opOpendir
        ops.readdir = opReaddir
        ops.releasedir = opReleasedir
        ops.statfs = opStatfs
        ops.mknod = opMknod
        ops.mkdir = opMkdir
        ops.unlink = opUnlink
        ops.rmdir = opRmdir
        ops.symlink = opSymlink
        ops.rename = opRename
        ops.link = opLink
        ops.create = opCreate
        return ops
    }
}

// MARK: - Session

/// Negotiates the request-saving options of the C floor: O_TRUNC travels
/// with OPEN (no SETATTR per `echo > file`); no readdirplus (a listing would
/// stat every entry); no writeback cache (every write must reach a store).
private func opInit(_ userdata: UnsafeMutableRawPointer?, _ conn: UnsafeMutablePointer<fuse_conn_info>?) {
    guard let conn else { return }
    if conn.pointee.capable & UInt32(FUSE_CAP_ATOMIC_O_TRUNC) != 0 {
        conn.pointee.want |= UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
    }
    conn.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_WRITEBACK_CACHE)
}

// MARK: - Names and attributes

private func opLookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let context = ServerContext.of(req)
    guard let directory = context.tree.node(parent) else { return replyError(req, ENOENT) }
    guard let entries = directory.directory else { return replyError(req, ENOTDIR) }
    // A removed node stays in its removed parent's entries; kernfs' lookup
    // skips inactive nodes.
    guard let name, let child = entries.child(named: String(cString: name)), !child.isRemoved else {
        return replyError(req, ENOENT)
    }
    var entry = context.entry(for: child)
    fuse_reply_entry(req, &entry)
}

/// Nodes live as long as the tree in this version, so there is nothing to
/// drop when the kernel forgets an inode.
private func opForget(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ nlookup: UInt64) {
    fuse_reply_none(req)
}

private func opForgetMulti(_ req: fuse_req_t?, _ count: Int, _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
    fuse_reply_none(req)
}

private func opGetattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let context = ServerContext.of(req)
    guard let node = context.tree.node(ino) else { return replyError(req, ENOENT) }
    var st = context.attributes(of: node)
    fuse_reply_attr(req, &st, ServerContext.cacheTimeout)
}

/// chmod and chown change the node as on kernfs (the kernel has already
/// checked ownership, with default_permissions). Truncation is accepted and
/// ignored where sysfs accepts it, so that `echo X > attr` works without
/// O_TRUNC support too. Time changes are accepted and ignored.
/// The size check comes first so that a refused request changes nothing.
private func opSetattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ attr: UnsafeMutablePointer<stat>?,
                       _ toSet: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let context = ServerContext.of(req)
    guard let node = context.tree.node(ino) else { return replyError(req, ENOENT) }
    guard let attr else { return replyError(req, EINVAL) }
    if toSet & FUSE_SET_ATTR_SIZE != 0, let refusal = truncationRefusal(node) {
        return replyError(req, refusal)
    }
    if toSet & FUSE_SET_ATTR_MODE != 0 {
        node.setPermissions(attr.pointee.st_mode)
    }
    if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
        node.setOwner(uid: toSet & FUSE_SET_ATTR_UID != 0 ? attr.pointee.st_uid : nil,
                      gid: toSet & FUSE_SET_ATTR_GID != 0 ? attr.pointee.st_gid : nil)
    }
    var st = context.attributes(of: node)
    fuse_reply_attr(req, &st, ServerContext.cacheTimeout)
}

/// The errno for truncating `node`, or nil when sysfs lets it pass: only an
/// attribute that could be opened for writing (a write bit and a store).
private func truncationRefusal(_ node: Node) -> Int32? {
    switch node.kind {
    case .directory:
        return EISDIR
    case .symlink:
        return EINVAL
    case .attribute(let attribute):
        let writable = node.metadataSnapshot.permissions & 0o222 != 0 && attribute.isWritable
        return writable ? nil : EACCES
    }
}

/// A removed link answers ENOENT, as the path to it does on sysfs (the
/// kernel reaches it only through a dentry it has not been told about yet).
private func opReadlink(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
    guard let node = ServerContext.of(req).tree.node(ino) else { return replyError(req, ENOENT) }
    guard let symlink = node.symlink else { return replyError(req, EINVAL) }
    guard !node.isRemoved else { return replyError(req, ENOENT) }
    symlink.cTarget.withUnsafeBufferPointer { target in
        _ = fuse_reply_readlink(req, target.baseAddress)
    }
}

private func opStatfs(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
    var st = statvfs()
    st.f_bsize = 4096
    st.f_frsize = 4096
    st.f_namemax = 255
    fuse_reply_statfs(req, &st)
}

// MARK: - Attribute files

/// kernfs' open checks (mode bit and show/store per access mode) come from
/// `OpenAttribute.open`; the kernel has already applied the mode and owner
/// to the caller (default_permissions). direct_io because st_size (4096) is
/// not the content length and every read must regenerate it; noflush saves
/// the FLUSH round trip on close.
private func opOpen(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return replyError(req, EIO) }
    guard let node = ServerContext.of(req).tree.node(ino) else { return replyError(req, ENOENT) }
    let access = fi.pointee.flags & O_ACCMODE
    switch OpenAttribute.open(node, forReading: access != O_WRONLY, forWriting: access != O_RDONLY) {
    case .success(let file):
        fi.pointee.direct_io = 1
        fi.pointee.noflush = 1
        fi.pointee.keep_cache = 0
        OpenHandle.store(file, in: fi)
        // -ENOENT: the open was interrupted and no RELEASE will follow.
        if fuse_reply_open(req, fi) == -ENOENT { OpenHandle<OpenAttribute>.release(fi) }
    case .failure(let errno):
        replyError(req, errno.rawValue)
    }
}

private func opRead(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
                    _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return replyError(req, EBADF) }
    let file = OpenHandle<OpenAttribute>.borrow(fi)
    let result = file.read(offset: offset, size: size) { bytes in
        fuse_reply_buf(req, bytes.baseAddress, bytes.count)
    }
    if case .failure(let errno) = result { replyError(req, errno.rawValue) }
}

/// The store runs with the credentials of the writing thread, as sysfs
/// stores see `current`; the file offset is not passed on (sysfs ignores it).
///
/// A store that changed the tree (`remove`, `unbind`, `rescan`...) is
/// answered once the cache notifier has told the kernel, so that the
/// writer's next syscall does not meet a dentry of a removed node: the
/// handler itself sends nothing (it may not: see `CacheNotifier`), it only
/// waits for the changes made on its own thread, at most
/// `ServerContext.writeVisibilityTimeout`.
private func opWrite(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ buffer: UnsafePointer<CChar>?, _ size: Int,
                     _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return replyError(req, EBADF) }
    let file = OpenHandle<OpenAttribute>.borrow(fi)
    let context = ServerContext.of(req)
    let caller = RequestCaller(of: req, serverNamespace: context.userNamespace)
    let latestBefore = context.notifications.latestOfThisThread
    let result = file.write(UnsafeRawBufferPointer(start: buffer, count: size), caller: caller)
    let latest = context.notifications.latestOfThisThread
    if latest != latestBefore {
        context.notifications.wait(through: latest, milliseconds: context.writeVisibilityTimeout)
    }
    switch result {
    case .success(let count): fuse_reply_write(req, count)
    case .failure(let errno): replyError(req, errno.rawValue)
    }
}

private func opRelease(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    if let fi { OpenHandle<OpenAttribute>.release(fi) }
    replyError(req, 0)
}

// MARK: - Directories

private func opOpendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return replyError(req, EIO) }
    guard let node = ServerContext.of(req).tree.node(ino) else { return replyError(req, ENOENT) }
    guard let directory = node.directory else { return replyError(req, ENOTDIR) }
    OpenHandle.store(DirectoryStream(node, children: directory.snapshot()), in: fi)
    if fuse_reply_open(req, fi) == -ENOENT { OpenHandle<DirectoryStream>.release(fi) }
}

/// Fills the kernel's buffer from entry `offset` on, as many entries as fit.
/// Entries removed since opendir are skipped, as kernfs skips inactive nodes,
/// without shifting the offsets of the others.
private func opReaddir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
                       _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return replyError(req, EBADF) }
    let stream = OpenHandle<DirectoryStream>.borrow(fi)
    withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) { buffer in
        var used = 0
        var st = stat()
        var index = max(Int(offset), 0)
        while index < stream.count {
            let added = addEntry(index, of: stream, req: req, into: buffer, at: used, stat: &st)
            if added > buffer.count - used { break }
            used += added
            index += 1
        }
        fuse_reply_buf(req, used > 0 ? buffer.baseAddress : nil, used)
    }
}

/// Adds entry `index` of `stream` at `buffer[used...]` and returns its size
/// (larger than the space left when it did not fit; 0 for a skipped entry).
private func addEntry(_ index: Int, of stream: DirectoryStream, req: fuse_req_t?,
                      into buffer: UnsafeMutableRawBufferPointer, at used: Int, stat st: inout stat) -> Int {
    let name: String
    switch index {
    case 0:
        name = "."
        st.st_ino = UInt(stream.ino)
        st.st_mode = S_IFDIR
    case 1:
        name = ".."
        st.st_ino = UInt(stream.parentIno)
        st.st_mode = S_IFDIR
    default:
        let child = stream.children[index - 2]
        if child.isRemoved { return 0 }
        name = child.name
        st.st_ino = UInt(child.ino)
        st.st_mode = child.fileType
    }
    return name.withCString { cName in
        fuse_add_direntry(req, buffer.baseAddress! + used, buffer.count - used, cName, &st, off_t(index + 1))
    }
}

private func opReleasedir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    if let fi { OpenHandle<DirectoryStream>.release(fi) }
    replyError(req, 0)
}

// MARK: - Changes sysfs refuses

// kernfs directories have no mknod/symlink/link/unlink op and refuse
// mkdir/rmdir/rename without syscall ops: the VFS answers EPERM. They have
// no create op either, for which the VFS answers EACCES, so that
// `echo x > nonexistent` says "Permission denied" as on /sys.

private func opMknod(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                     _ mode: mode_t, _ rdev: dev_t) {
    replyError(req, EPERM)
}

private func opMkdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
    replyError(req, EPERM)
}

private func opUnlink(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    replyError(req, EPERM)
}

private func opRmdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    replyError(req, EPERM)
}

private func opSymlink(_ req: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t,
                       _ name: UnsafePointer<CChar>?) {
    replyError(req, EPERM)
}

private func opRename(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                      _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?, _ flags: UInt32) {
    replyError(req, EPERM)
}

private func opLink(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ newParent: fuse_ino_t,
                    _ newName: UnsafePointer<CChar>?) {
    replyError(req, EPERM)
}

private func opCreate(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                      _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    replyError(req, EACCES)
}

// MARK: -

/// `fuse_reply_err`; 0 is the success reply of release-like operations.
private func replyError(_ req: fuse_req_t?, _ errno: Int32) {
    fuse_reply_err(req, errno)
}
