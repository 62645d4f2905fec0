import Glibc
import Topology

/// The sending side of a trace: lines written to the client's socket
/// without ever blocking, so that a client that stops reading cannot stall
/// its session, which must go on noticing the events that pile up.
///
/// Room is kept in the socket's send buffer for the last line, the notice
/// that the trace is dropped: lines are only sent while the bytes the
/// client has not read yet (`SIOCOUTQ`, counted like the buffer size
/// `SO_SNDBUF`) leave `reserve` free. The kernel takes a send of a Unix
/// stream socket whole while what is queued is below `SO_SNDBUF`
/// (`unix_stream_sendmsg`, `sock_alloc_send_pskb`), so the notice always
/// fits and a client that reads again finds it after the last event.
struct TraceSender {
    let fd: Int32
    /// `SO_SNDBUF` of the socket.
    private let sendBuffer: Int
    /// Free space kept in the send buffer: `reserve`, or half of a buffer
    /// set smaller than twice that.
    private let kept: Int
    /// Bytes accepted from the caller that the socket did not take yet (a
    /// short send; not expected under the reserve, handled all the same).
    private var pending: ArraySlice<UInt8> = []

    /// Free space kept in the send buffer: one batch of lines in flight
    /// (`batchSize` lines of ~100 bytes, plus the kernel's per-send overhead)
    /// and the notice.
    static let reserve = 16 * 1024
    /// Lines per send: one send per event would cost the kernel a buffer
    /// each (~1 KiB of accounting for ~80 bytes of text).
    static let batchSize = 32

    /// linux/sockios.h (`TIOCOUTQ`), which Glibc's module does not export:
    /// for a Unix socket, the memory of what was sent and not read yet
    /// (`unix_outq_len`).
    private static let SIOCOUTQ: UInt = 0x5411

    init(fd: Int32) {
        self.fd = fd
        var size: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let known = getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &length) == 0
        // Unknown: the smallest the kernel allows (SOCK_MIN_SNDBUF is ~4.5 KiB).
        sendBuffer = known ? Int(size) : 4608
        kept = min(Self.reserve, sendBuffer / 2)
    }

    /// True when the socket takes another batch and still leaves `reserve`
    /// (if the kernel cannot tell what is unread, when nothing is pending:
    /// sends still never block, but the notice may find no room).
    var hasRoom: Bool {
        guard pending.isEmpty else { return false }
        var unread: Int32 = 0
        guard ioctl(fd, Self.SIOCOUTQ, &unread) == 0 else { return true }
        return Int(unread) + kept <= sendBuffer
    }

    /// Sends `lines` as far as the socket takes them now; false if the
    /// client is gone.
    mutating func send(_ lines: [JSON]) -> Bool {
        pending += lines.flatMap { LineChannel.encode($0) }
        return flush()
    }

    /// Sends what a short send left over; false if the client is gone.
    mutating func flush() -> Bool {
        while !pending.isEmpty {
            let n = pending.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return errno == EAGAIN || errno == EWOULDBLOCK
            }
            pending = pending.dropFirst(n)
        }
        pending = []
        return true
    }
}
