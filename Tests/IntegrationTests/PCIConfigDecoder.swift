import Glibc

/// Decodes a function's config space the way `lspci -vv` walks it, into
/// the oracle's `pcicaps` notation:
/// `hdr=0[,mf] caps=10,11|- ext=0001,000d|- [pcie=TYPE] [ari=1]
/// [sltcap=hpc:H,psn:N] [acs=cap:XXXX,ctl:XXXX] [sriov=total:...,ctl:XXXX]`.
/// Written from the PCI specification's register layout, independently
/// of the mount's encoder.
enum PCIConfigDecoder {
    static let portNames: [UInt8: String] = [
        0: "endpoint", 1: "legacy-endpoint", 4: "root-port", 5: "upstream", 6: "downstream",
        7: "pcie-pci-bridge", 8: "pci-pcie-bridge", 9: "rc-endpoint", 10: "rc-event-collector",
    ]

    static func describe(_ config: [UInt8]) -> String {
        func u8(_ o: Int) -> Int { o < config.count ? Int(config[o]) : 0 }
        func u16(_ o: Int) -> Int { u8(o) | u8(o + 1) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        func hex(_ v: Int, _ width: Int) -> String {
            let digits = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let header = u8(0x0e)
        var parts = ["hdr=\(header & 0x7f)" + (header & 0x80 != 0 ? ",mf" : "")]
        var standard: [(id: Int, at: Int)] = []
        if u16(0x06) & 0x10 != 0 {
            var at = u8(0x34) & ~3
            while at >= 0x40, standard.count < 48 {
                standard.append((u8(at), at))
                at = u8(at + 1) & ~3
            }
        }
        parts.append("caps=" + (standard.isEmpty ? "-" : standard.map { hex($0.id, 2) }.joined(separator: ",")))
        var extended: [(id: Int, at: Int)] = []
        if config.count > 0x100 {
            var at = 0x100
            while at >= 0x100, extended.count < 48, u32(at) != 0 {
                extended.append((u32(at) & 0xffff, at))
                at = (u32(at) >> 20) & ~3
            }
        }
        parts.append("ext=" + (extended.isEmpty ? "-" : extended.map { hex($0.id, 4) }.joined(separator: ",")))
        if let express = standard.first(where: { $0.id == 0x10 }) {
            let flags = u16(express.at + 2)
            parts.append("pcie=" + (portNames[UInt8((flags >> 4) & 0xf)] ?? "type\((flags >> 4) & 0xf)"))
            if extended.contains(where: { $0.id == 0x000e }) { parts.append("ari=1") }
            if flags & 0x100 != 0 {
                let slot = u32(express.at + 0x14)
                parts.append("sltcap=hpc:\((slot >> 6) & 1),psn:\(slot >> 19)")
            }
        }
        if let acs = extended.first(where: { $0.id == 0x000d }) {
            parts.append("acs=cap:\(hex(u16(acs.at + 4), 4)),ctl:\(hex(u16(acs.at + 6), 4))")
        }
        if let sriov = extended.first(where: { $0.id == 0x0010 }) {
            let s = sriov.at
            parts.append("sriov=total:\(u16(s + 0x0e)),initial:\(u16(s + 0x0c)),num:\(u16(s + 0x10)),offset:\(u16(s + 0x14)),"
                         + "stride:\(u16(s + 0x16)),vfdev:\(hex(u16(s + 0x1a), 4)),ctl:\(hex(u16(s + 0x08), 4))")
        }
        return parts.joined(separator: " ")
    }
}

extension Syscall {
    /// The whole binary file at `path`, read a page at a time; nil when it
    /// cannot be opened.
    static func bytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n <= 0 { return data }
            data += buffer[0..<n]
        }
    }
}
