import Glibc

/// The `readdir path=/sys/... order=a,b,c count=N` lines: the raw getdents
/// order of a directory through the mount. The transcripts leave "." and
/// ".." out of `order`; kernfs emits them first (`dir_emit_dots`), so the
/// actual text names them if they are anywhere else.
enum ReaddirOrder {
    static func observe(_ line: TranscriptLine, on mount: MountedMachine) -> (expected: String, actual: String) {
        let sysPath = line.fields["path"] ?? ""
        let expected = "order=\(line.fields["order"] ?? "") count=\(line.fields["count"] ?? "")"
        guard sysPath.hasPrefix("/sys/"), let all = names(mount.path(String(sysPath.dropFirst(5)))) else {
            return (expected, "<cannot list \(sysPath)>")
        }
        let entries = all.filter { $0 != "." && $0 != ".." }
        var actual = "order=\(entries.joined(separator: ",")) count=\(entries.count)"
        if Array(all.prefix(2)) != [".", ".."] { actual += " (dots not first: \(all.joined(separator: ",")))" }
        return (expected, actual)
    }

    /// Every name readdir(3) returns, "." and ".." included, in order.
    static func names(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            names.append(withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) })
        }
        return names
    }
}
