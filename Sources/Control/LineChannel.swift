import Glibc
import SystemPackage
import Topology

/// JSON lines over a connected stream socket, in either direction.
/// Not for sharing between threads: each connection has its own.
final class LineChannel {
    let fd: Int32
    private var buffer: [UInt8] = []
    /// Where the unread part of `buffer` starts.
    private var start = 0
    /// Bytes from `start` up to here hold no newline (so a long line is
    /// scanned once, not once per chunk).
    private var scanned = 0

    /// A longer line is refused, so a client cannot make the daemon buffer
    /// without end (a dump of a big machine is a long reply, but replies
    /// are read by the client, which sets no limit).
    let maximumLength: Int

    init(fd: Int32, maximumLength: Int = .max) {
        self.fd = fd
        self.maximumLength = maximumLength
    }

    deinit { close(fd) }

    enum ReadError: Error {
        case tooLong
        case failed(Errno)
    }

    /// The next line without its newline; nil at the end of the stream (a
    /// last line without a newline is dropped: the peer went away mid-line).
    func readLine() throws(ReadError) -> [UInt8]? {
        while true {
            if let newline = buffer[max(start, scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                scanned = start
                return line
            }
            scanned = buffer.count
            guard buffer.count - start <= maximumLength else { throw .tooLong }
            guard try fill() else { return nil }
        }
    }

    /// Reads what is there (blocking until something is); false at the end.
    private func fill() throws(ReadError) -> Bool {
        if start > 0 {
            buffer.removeFirst(start)
            scanned -= start
            start = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buffer += chunk[..<n]
                return true
            }
            if n == 0 { return false }
            guard Glibc.errno == EINTR else { throw .failed(Errno(rawValue: Glibc.errno)) }
        }
    }

    /// `json` as the bytes of one line.
    static func encode(_ json: JSON) -> [UInt8] { Array((json.compactText + "\n").utf8) }

    /// Writes `json` as one line; false if the peer is gone.
    @discardableResult
    func send(_ json: JSON) -> Bool {
        let bytes = Self.encode(json)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && Glibc.errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}
