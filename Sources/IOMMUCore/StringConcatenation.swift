extension String {
    /// `parts` end to end, in one allocation. `+` and interpolation go
    /// through the general append path (hundreds of instructions a piece);
    /// boot builds a sysfs path and a log line for each of a big machine's
    /// 100,000 devices.
    init(concatenating parts: String...) {
        var count = 0
        for part in parts { count += part.utf8.count }
        self.init(unsafeUninitializedCapacity: count) { buffer in
            var offset = 0
            for var part in parts {
                part.withUTF8 { bytes in
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[offset...]).initialize(fromContentsOf: bytes)
                    offset += bytes.count
                }
            }
            return offset
        }
    }
}
