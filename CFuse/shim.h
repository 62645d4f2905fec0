/*
 * CFuse: the part of libfuse3's low-level API that iommufs calls from Swift,
 * plus small inline helpers for what Swift cannot call directly (variadic
 * syscall(2), function-like macros).
 */
#ifndef IOMMUFS_CFUSE_SHIM_H
#define IOMMUFS_CFUSE_SHIM_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <malloc.h> /* malloc_trim: the daemon returns its boot garbage */
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <linux/capability.h>

/*
 * Effective capability set of thread `tid`, as capget(2) reports it.
 * Returns 0 and fills *effective (bits 0..63), or -errno.
 * The kernel checks capable() of the writing task at write time, so the
 * FUSE server asks for the caps of the requesting thread on every store.
 */
static inline int cfuse_effective_caps(pid_t tid, uint64_t *effective)
{
    struct __user_cap_header_struct header = {
        .version = _LINUX_CAPABILITY_VERSION_3,
        .pid = tid,
    };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &header, data) != 0)
        return -errno;
    *effective = ((uint64_t)data[1].effective << 32) | data[0].effective;
    return 0;
}

/* fuse_session_new became a macro in libfuse 3.17; keep one spelling for Swift. */
static inline struct fuse_session *cfuse_session_new(struct fuse_args *args,
                                                     const struct fuse_lowlevel_ops *ops,
                                                     size_t ops_size, void *userdata)
{
    return fuse_session_new(args, ops, ops_size, userdata);
}

#endif
