import Foundation
import Glibc

/// Thin wrappers that return the errno instead of hiding it, so tests can
/// assert exactly what a program sees.
enum Syscall {
    enum Outcome: Equatable, CustomStringConvertible {
        case ok(Int)
        case failed(Int32)

        var description: String {
            switch self {
            case .ok(let n): "ok \(n)"
            case .failed(let e): "err \(String(cString: strerror(e)))"
            }
        }
    }

    /// One open + one write(2) of `bytes` at `offset` (pwrite when given) + close.
    static func write(_ path: String, _ bytes: [UInt8], flags: Int32 = O_WRONLY, offset: Int? = nil) -> Outcome {
        let fd = open(path, flags)
        guard fd >= 0 else { return .failed(errno) }
        defer { close(fd) }
        let n = bytes.withUnsafeBytes { b in
            offset.map { pwrite(fd, b.baseAddress, b.count, off_t($0)) } ?? Glibc.write(fd, b.baseAddress, b.count)
        }
        return n < 0 ? .failed(errno) : .ok(n)
    }

    static func write(_ path: String, _ text: String) -> Outcome { write(path, Array(text.utf8)) }

    /// Opens with `flags` and reports only the open's outcome.
    static func openOutcome(_ path: String, _ flags: Int32) -> Outcome {
        let fd = open(path, flags)
        guard fd >= 0 else { return .failed(errno) }
        close(fd)
        return .ok(0)
    }

    /// The whole file, read in `chunk`-byte read(2) calls.
    static func read(_ path: String, chunk: Int = 4096) -> Result<String, Errno> {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return .failure(Errno(errno)) }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let n = Glibc.read(fd, &buffer, chunk)
            if n < 0 { return .failure(Errno(errno)) }
            if n == 0 { return .success(String(decoding: data, as: UTF8.self)) }
            data += buffer[0..<n]
        }
    }

    /// The whole file as text, nil if it cannot be read.
    static func text(_ path: String, chunk: Int = 4096) -> String? {
        try? read(path, chunk: chunk).get()
    }

    /// pread of `count` bytes at `offset`.
    static func pread(_ path: String, offset: Int, count: Int = 4096) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = Glibc.pread(fd, &buffer, count, off_t(offset))
        return n < 0 ? nil : String(decoding: buffer[0..<n], as: UTF8.self)
    }

    static func lstat(_ path: String) -> stat? {
        var st = stat()
        return Glibc.lstat(path, &st) == 0 ? st : nil
    }

    static func readlink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = Glibc.readlink(path, &buffer, buffer.count - 1)
        return n < 0 ? nil : String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Entry names of a directory (without . and ..), in readdir order.
    static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

struct Errno: Error, Equatable, CustomStringConvertible {
    var code: Int32
    init(_ code: Int32) { self.code = code }
    var description: String { String(cString: strerror(code)) }
}

extension Syscall {
    /// `write(path, text)` on a thread of its own, waited for at most
    /// `limit`: nil if it has not returned by then. A FUSE request whose
    /// reply the kernel refused never returns (the thread sleeps in state D
    /// until the server dies, which `MountedMachine.stop` sees to), so a
    /// test of such a request fails instead of hanging.
    static func boundedWrite(_ path: String, _ text: String, within limit: Duration = .seconds(10)) -> Outcome? {
        let result = BoundedResult<Outcome>()
        let thread = Thread { result.set(write(path, text)) }
        thread.start()
        return result.wait(upTo: limit)
    }
}

/// A value another thread delivers once, waited for with a time limit.
final class BoundedResult<Value: Sendable>: @unchecked Sendable {
    private let done = NSCondition()
    private var value: Value?

    func set(_ value: Value) {
        done.lock(); self.value = value; done.broadcast(); done.unlock()
    }

    func wait(upTo limit: Duration) -> Value? {
        let deadline = Date(timeIntervalSinceNow: Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18)
        done.lock(); defer { done.unlock() }
        while value == nil && done.wait(until: deadline) {}
        return value
    }
}
