import Glibc

/// `ls -lan` of a directory through the mount, as the transcripts print it
/// (`ls-la group=N: ...` lines): the `total` line, then one line per entry
/// with mode string, link count, numeric owner and group, size, name and
/// `-> target` for symlinks. The date columns are left out, as the
/// transcripts leave them out.
enum LsLa {
    /// The lines of `ls -lan path` (entries in C-locale byte order, `.` and
    /// `..` included), nil if the directory cannot be listed.
    static func listing(_ path: String) -> [String]? {
        guard Syscall.lstat(path) != nil else { return nil }
        let names = ([".", ".."] + Syscall.list(path)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var blocks = 0
        var lines: [String] = []
        for name in names {
            let full = path + "/" + name
            guard let st = Syscall.lstat(full) else {
                lines.append("<lstat failed: \(name)>")
                continue
            }
            blocks += Int(st.st_blocks)
            var line = "\(modeString(st.st_mode)) \(st.st_nlink) \(st.st_uid) \(st.st_gid) \(st.st_size) \(name)"
            if st.st_mode & S_IFMT == S_IFLNK { line += " -> " + (Syscall.readlink(full) ?? "<unreadable>") }
            lines.append(line)
        }
        // ls counts 512-byte blocks and prints 1024-byte units, rounded up.
        return ["total \((blocks + 1) / 2)"] + lines
    }

    /// `drwxr-xr-x`: the type letter, then rwx for owner, group and others
    /// (with s/S and t/T for the set-id and sticky bits), as `ls` prints it.
    static func modeString(_ mode: mode_t) -> String {
        let type: Character = switch mode & S_IFMT {
        case S_IFDIR: "d"
        case S_IFLNK: "l"
        case S_IFREG: "-"
        case S_IFCHR: "c"
        case S_IFBLK: "b"
        case S_IFIFO: "p"
        case S_IFSOCK: "s"
        default: "?"
        }
        var text = String(type)
        let special: [(mode_t, Character)] = [(S_ISUID, "s"), (S_ISGID, "s"), (S_ISVTX, "t")]
        for (index, shift) in [6, 3, 0].enumerated() {
            let bits = (mode >> mode_t(shift)) & 0o7
            text.append(bits & 4 != 0 ? "r" : "-")
            text.append(bits & 2 != 0 ? "w" : "-")
            let (flag, letter) = special[index]
            switch (bits & 1 != 0, mode & flag != 0) {
            case (true, true): text.append(letter)
            case (false, true): text.append(Character(letter.uppercased()))
            case (true, false): text.append("x")
            case (false, false): text.append("-")
            }
        }
        return text
    }
}

/// Compares the `ls-la LABEL: TEXT` lines of a transcript with `ls -lan`
/// through the mount: the listing is made once, at the first line of each
/// label (the `total` line), and each later line of that label is compared
/// with the next listing line.
struct LsLaReplay {
    private var label = ""
    private var listing: [String] = []
    private var next = 0

    /// `kernel/iommu_groups/N[/devices]` for the label `group=N[/devices]`.
    private static func relativePath(_ label: String) -> String? {
        guard label.hasPrefix("group=") else { return nil }
        return "kernel/iommu_groups/" + label.dropFirst(6)
    }

    /// The expected and the actual text of `lines[index]`, an `ls-la` line.
    mutating func observe(_ lines: [TranscriptLine], at index: Int, on mount: MountedMachine) -> (expected: String, actual: String) {
        let line = lines[index]
        let body = line.text.dropFirst("ls-la ".count)
        guard let colon = body.range(of: ": ") else { return (line.text, "<unparsed ls-la line>") }
        let lineLabel = String(body[..<colon.lowerBound])
        let expected = String(body[colon.upperBound...])
        if lineLabel != label {
            label = lineLabel
            next = 0
            listing = Self.relativePath(label).flatMap { LsLa.listing(mount.path($0)) } ?? ["<no such directory>"]
            // The transcript's lines of this label, for the entry count.
            let transcribed = lines[index...].prefix { $0.kind == "ls-la" && $0.text.hasPrefix("ls-la \(label): ") }.count
            if transcribed != listing.count {
                listing[0] += " (\(listing.count - 1) entries; the transcript has \(transcribed - 1))"
            }
        }
        defer { next += 1 }
        return (expected, next < listing.count ? listing[next] : "<no such entry>")
    }
}
