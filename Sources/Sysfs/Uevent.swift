import IOMMUCore
import SystemPackage

/// A device's `uevent` store (drivers/base/core.c `uevent_store` →
/// lib/kobject_uevent.c `kobject_synth_uevent`): a synthetic event is
/// `ACTION [UUID [KEY=VALUE ...]]`. The mount has no netlink listeners, so
/// a valid request is accepted with nothing to deliver; an invalid one is
/// EINVAL, logged as those two functions log it.
enum Uevent {
    /// `kobject_actions[]`, in enum kobject_action order.
    static let actions = ["add", "remove", "change", "move", "online", "offline", "bind", "unbind"]

    /// What a `uevent` store returns for `buffer`, written to the kobject
    /// at `path` (from the sysfs root). A device's (`uevent_store`) also
    /// logs with `dev_err`, whose "<driver or bus or class> <device>" is
    /// `devicePrefix`; a bus's or a driver's (`bus_uevent_store`,
    /// drivers/base/bus.c `uevent_store`) only return the error.
    static func store(_ buffer: UnsafeRawBufferPointer, path: String, devicePrefix: String? = nil,
                      log: KernelLog) -> Result<Int, Errno> {
        if let problem = problem(Array(buffer)) {
            log.append("synth uevent: /\(path): \(problem)")
            if let devicePrefix { log.append("\(devicePrefix): uevent: failed to send synthetic uevent: -22") }
            return .failure(.invalidArgument)
        }
        return .success(buffer.count)
    }

    /// `kobject_synth_uevent`'s message for a request it refuses, nil if valid.
    static func problem(_ bytes: [UInt8]) -> String? {
        // kobject_action_type
        var count = bytes.count
        if count > 0, bytes[count - 1] == 0x0a || bytes[count - 1] == 0 { count -= 1 }
        let unknown = "unknown uevent action string"
        guard count > 0 else { return unknown }
        let space = bytes[0..<count].firstIndex(of: 0x20)
        // The word must be a whole action: `kobject_actions[action][count_first]`
        // must be its NUL (a NUL inside the word does not end it there).
        let first = Array(bytes[..<(space ?? count)])
        guard actions.contains(where: { Array($0.utf8) == first }) else { return unknown }
        guard let space else { return nil }
        // The arguments run to the end of the original buffer.
        return validArguments(Array(bytes[(space + 1)...])) ? nil : "incorrect uevent action arguments"
    }

    /// `kobject_action_args`: a UUID, then ` KEY=VALUE` pairs, both words
    /// alphanumeric and not empty (`action_arg_word_end`).
    private static func validArguments(_ args: [UInt8]) -> Bool {
        var count = args.count
        if count > 0, args[count - 1] == 0x0a || args[count - 1] == 0 { count -= 1 }
        guard count >= 36, isUUID(args[0..<36]) else { return false }
        var next = 36
        func word(until delimiter: UInt8) -> Int? {
            let start = next
            while next < count, args[next] != delimiter {
                guard isAlphanumeric(args[next]) else { return nil }
                next += 1
            }
            return next == start ? nil : next
        }
        while next < count {
            guard args[next] == 0x20 else { return false }
            next += 1
            guard next < count, word(until: UInt8(ascii: "=")) != nil, next < count else { return false }
            next += 1   // the '='
            guard next < count, word(until: 0x20) != nil else { return false }
        }
        return true
    }

    /// `uuid_is_valid`: 8-4-4-4-12 hex digits.
    private static func isUUID(_ text: ArraySlice<UInt8>) -> Bool {
        for (offset, byte) in text.enumerated() {
            if [8, 13, 18, 23].contains(offset) {
                if byte != UInt8(ascii: "-") { return false }
            } else if !isHexDigit(byte) {
                return false
            }
        }
        return true
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte)
    }
}
