/// `kernfs_name_hash()` (fs/kernfs/dir.c) for a node without a namespace
/// tag (`ns == NULL`, as everywhere under /sys/kernel, /sys/bus and
/// /sys/devices): the 31-bit hash that orders a directory's children in
/// its rbtree, and so in getdents, before the name does
/// (`kernfs_name_compare`: hash, then ns, then strcmp).
///
/// ```c
/// unsigned long hash = init_name_hash(ns);
/// while (len--) hash = partial_name_hash(*name++, hash);
/// hash = end_name_hash(hash);
/// hash &= 0x7fffffffU;
/// if (hash < 2) hash += 2;            /* 0, 1: "." and ".." */
/// if (hash >= INT_MAX) hash = INT_MAX - 1;
/// ```
///
/// with include/linux/stringhash.h's byte-at-a-time helpers on a 64-bit
/// kernel: `partial_name_hash(c, h) = (h + (c << 4) + (c >> 4)) * 11` in
/// `unsigned long`, and `end_name_hash(h) = hash_long(h, 32)`, i.e.
/// `hash_64(h, 32) = h * GOLDEN_RATIO_64 >> 32`. (kernfs does not use the
/// word-at-a-time `full_name_hash()` of fs/namei.c.)
public enum KernfsHash {
    /// GOLDEN_RATIO_64, include/linux/hash.h.
    static let goldenRatio64: UInt64 = 0x61C8_8646_80B5_83EB

    /// The hash of `name` in a directory without namespaces.
    public static func of(_ name: String) -> UInt32 {
        var hash: UInt64 = 0   // init_name_hash(NULL)
        for byte in name.utf8 {
            // `*name++` is a (signed) char on x86: bytes >= 0x80 sign-extend.
            let c = UInt64(bitPattern: Int64(Int8(bitPattern: byte)))
            hash = (hash &+ (c << 4) &+ (c >> 4)) &* 11
        }
        var result = UInt32(truncatingIfNeeded: (hash &* goldenRatio64) >> 32) & 0x7fff_ffff
        if result < 2 { result += 2 }
        if result >= UInt32(Int32.max) { result = UInt32(Int32.max) - 1 }
        return result
    }
}
