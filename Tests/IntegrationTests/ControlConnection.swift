import Glibc

/// A raw connection to a server's control socket, for tests that speak
/// the protocol themselves (the kernel log comparison, clients that never
/// read, more clients than the server takes).
struct ControlConnection {
    let fd: Int32
    private var buffered: [UInt8] = []

    /// Connects; every later read waits at most `timeout` seconds.
    init(path: String, timeout: Int = 20) throws {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw MountedMachine.MountError(description: "control socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (k, b) in bytes.enumerated() { raw[k] = b }
        }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, ok == 0 else {
            if fd >= 0 { Glibc.close(fd) }
            throw MountedMachine.MountError(description: "cannot connect to \(path): errno \(errno)")
        }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    /// Sends `line` and a newline; false if the server is gone.
    func send(_ line: String) -> Bool {
        let bytes = Array((line + "\n").utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// The next line without its newline; nil at the end of the stream, on
    /// an error or after the timeout.
    mutating func readLine() -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                defer { buffered.removeSubrange(...newline) }
                return Array(buffered[..<newline])
            }
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            buffered += chunk[..<n]
        }
    }

    /// `readLine` as text.
    mutating func readText() -> String? { readLine().map { String(decoding: $0, as: UTF8.self) } }

    func close() { Glibc.close(fd) }
}
