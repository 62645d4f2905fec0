import CFuse
import Glibc
import IOMMUCore
import Sysfs
import SystemPackage

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
///
/// And kernel caching, as the floor's `--kcache`, kept correct by the cache
/// notifier: link targets are cached (`FUSE_CAP_CACHE_SYMLINKS`; a target
/// never changes, a changed link is a new inode), and, where the kernel can
/// do without OPENDIR (`FUSE_CAP_NO_OPENDIR_SUPPORT`), OPENDIR answers
/// ENOSYS once, after which the kernel sends no OPENDIR/RELEASEDIR and keeps
/// listings in its cache. The notifier's `notify_inval_inode` on a changed
/// directory drops its cached listing; with `FUSE_CAP_AUTO_INVAL_DATA` the
/// kernel also compares the directory's mtime (bumped by every change) with
/// the one its listing was made at, which covers a listing that raced with
/// the change.
private func opInit(_ userdata: UnsafeMutableRawPointer?, _ conn: UnsafeMutablePointer<fuse_conn_info>?) {
    guard let conn else { return }
    for capability in [FUSE_CAP_ATOMIC_O_TRUNC, FUSE_CAP_CACHE_SYMLINKS, FUSE_CAP_AUTO_INVAL_DATA]
    where conn.pointee.capable & UInt32(capability) != 0 {
        conn.pointee.want |= UInt32(capability)
    }
    conn.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_WRITEBACK_CACHE)
    if let userdata, conn.pointee.capable & UInt32(FUSE_CAP_NO_OPENDIR_SUPPORT) != 0 {
        Unmanaged<ServerContext>.fromOpaque(userdata).takeUnretainedValue().kernelCachesListings()
    }
}

// MARK: - Names and attributes

private func opLookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let context = ServerContext.of(req)
    guard let directory = context.tree.node(parent) else { return replyError(req, ENOENT) }
    guard let entries = directory.directory else { return replyError(req, ENOTDIR) }
    // A removed node stays in its removed parent's entries; kernfs' lookup
    // skips inactive nodes. The lookup is counted before the reply (a node
    // removed meanwhile is not counted and answers ENOENT), and uncounted
    // if the reply did not reach the kernel.
    guard let name, let child = entries.child(named: String(cString: name)), child.acquireLookup() else {
        return replyError(req, ENOENT)
    }
    var entry = context.entry(for: child)
    if fuse_reply_entry(req, &entry) != 0 { context.tree.forget(child.ino, count: 1) }
}

/// The kernel dropped its references to an inode: a removed node is freed
/// once it has none left (nodes still in the tree live as long as it).
private func opForget(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ nlookup: UInt64) {
    ServerContext.of(req).tree.forget(ino, count: nlookup)
    fuse_reply_none(req)
}

private func opForgetMulti(_ req: fuse_req_t?, _ count: Int, _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
    let tree = ServerContext.of(req).tree
    if let forgets {
        for i in 0..<count { tree.forget(forgets[i].ino, count: forgets[i].nlookup) }
    }
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
/// The target is computed here, once per link inode: the kernel caches it.
private func opReadlink(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
    guard let node = ServerContext.of(req).tree.node(ino) else { return replyError(req, ENOENT) }
    guard node.symlink != nil else { return replyError(req, EINVAL) }
    guard !node.isRemoved, let target = node.linkTarget else { return replyError(req, ENOENT) }
    _ = target.withCString { fuse_reply_readlink(req, $0) }
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
    switch OpenAttribute.open(node, forReading: access != O_WRONLY, forWriting: access != O_RDONLY,
                              opener: { RequestCaller(of: req, serverNamespace: ServerContext.of(req).userNamespace) }) {
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
/// stores see `current`; the file offset matters to binary attributes only.
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
    let result = file.write(UnsafeRawBufferPointer(start: buffer, count: size), caller: caller, offset: Int(offset))
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

/// ENOSYS once the kernel can do without OPENDIR: it then stops sending
/// OPENDIR and RELEASEDIR and caches listings (see `opInit`). Otherwise the
/// directory is opened with its listing cacheable. READDIR needs no state
/// of its own either way: offsets are the entries' fixed positions.
private func opOpendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let context = ServerContext.of(req)
    if context.listingsCachedWithoutOpendir { return replyError(req, ENOSYS) }
    guard let fi else { return replyError(req, EIO) }
    guard let node = context.tree.node(ino) else { return replyError(req, ENOENT) }
    guard node.directory != nil else { return replyError(req, ENOTDIR) }
    fi.pointee.fh = 0
    fi.pointee.cache_readdir = 1
    fi.pointee.keep_cache = 1
    fuse_reply_open(req, fi)
}

/// Fills the kernel's buffer from `offset` on, as many entries as fit, from
/// the directory as it is now, in kernfs order ("." and ".." first, as
/// `dir_emit_dots`, then the children by name hash). The offset after "."
/// is 1, after ".." 2, after a child its position (hash and sequence, at
/// least 2 << 32): positions never change and are never reused, so a
/// listing that spans several READDIRs while the directory changes neither
/// repeats nor skips an entry that stayed. Removed entries of a removed
/// directory are skipped, as kernfs skips inactive nodes.
private func opReaddir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
                       _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let node = ServerContext.of(req).tree.node(ino) else { return replyError(req, ENOENT) }
    guard let directory = node.directory else { return replyError(req, ENOTDIR) }
    withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 8) { buffer in
        let base = buffer.baseAddress!
        var used = 0
        var st = stat()
        st.st_mode = S_IFDIR
        func add(_ name: UnsafePointer<CChar>, _ next: off_t) -> Bool {
            let n = fuse_add_direntry(req, base + used, buffer.count - used, name, &st, next)
            if n > buffer.count - used { return false }
            used += n
            return true
        }
        var fits = true
        if offset < 1 {
            st.st_ino = UInt(node.ino)
            fits = add(".", 1)
        }
        if fits, offset < 2 {
            st.st_ino = UInt(node.parent?.ino ?? node.ino)   // the root's ".." is itself, as in sysfs
            fits = add("..", 2)
        }
        if fits {
            directory.forEachEntry(after: UInt64(clamping: offset)) { child in
                if child.isRemoved { return true }
                st.st_ino = UInt(child.ino)
                st.st_mode = child.fileType
                return child.name.withCString { add($0, off_t(child.position)) }
            }
        }
        fuse_reply_buf(req, used > 0 ? UnsafePointer(base.assumingMemoryBound(to: CChar.self)) : nil, used)
    }
}

private func opReleasedir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
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
///
/// The kernel refuses a reply whose error is a kernel-internal code
/// (`fuse_dev_do_write`: `oh.error <= -ERESTARTSYS`), and the request it
/// answers would then never complete: its caller would sleep in state D
/// until the server exits. The model maps such codes where the kernel
/// does; one that still gets here is a bug, answered with EIO and reported.
private func replyError(_ req: fuse_req_t?, _ errno: Int32) {
    guard errno < Errno.firstKernelInternal else {
        ServerContext.of(req).logger.error("internal error: errno \(errno) reached a FUSE reply (answered EIO instead); please report this")
        fuse_reply_err(req, EIO)
        return
    }
    fuse_reply_err(req, errno)
}
