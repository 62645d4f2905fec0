@testable import Fuzzing
import IOMMUCore
import Testing

/// The text format of the control and store inputs.
@Suite struct ScriptTests {
    @Test func payloadEscapes() {
        #expect(Payload.unescaped(Array(#"a\n\t\0\\\x41\x4"#.utf8)) == Array("a\n\t\0\\A\\x4".utf8))
        #expect(Payload.unescaped(Array(#"\q\"#.utf8)) == Array(#"\q\"#.utf8))
        #expect(Payload.escaped([0x3e, 0x5c, 0x6e, 0x00, 0x09, 0xff]) == #">\n\0\t\xff"#)
    }

    @Test func writeStep() {
        let write = StoreTarget.Write(Array(#"~devices/pci0000:00/0000:00:14.0/config@4 \x06\x04 x"#.utf8)[...])
        #expect(write.path == "devices/pci0000:00/0000:00:14.0/config")
        #expect(write.offset == 4)
        #expect(write.payload == [6, 4, 0x20, 0x78])
        #expect(!write.caller.capable(.sysAdmin))
        let root = StoreTarget.Write(Array(">bus/pci/rescan".utf8)[...])
        #expect(root.path == "bus/pci/rescan" && root.offset == 0 && root.payload.isEmpty && root.caller.capable(.sysAdmin))
    }

    @Test func header() {
        let script = Script(Array("@qemu-q35-alt linux-6.1\n>a 1\n\n{}".utf8))
        #expect(script.machineName == "qemu-q35-alt" && script.profile?.name == "linux-6.1")
        #expect(script.steps.map { String(decoding: $0, as: UTF8.self) } == [">a 1", "", "{}"])
        #expect(script.label(2) == "line 4 {}")
        let plain = Script(Array("@nonesuch\n>a 1".utf8))
        #expect(plain.machineName == "default" && plain.profile == nil && plain.label(0) == "line 2 >a 1")
    }
}
