import IOMMUCore
import Testing

/// `dev_name()` of a PCI function, `dddd:bb:dd.f`: how sysfs names devices and
/// how every other part of the project looks them up.
@Suite("PCI addresses")
struct PCIAddressTests {
    @Test("parses dddd:bb:dd.f and prints it back", arguments: ["0000:00:00.0", "0000:03:00.0", "0000:00:1f.3", "10de:ff:1f.7"])
    func roundTrip(text: String) throws {
        let address = try #require(PCIAddress(text))
        #expect(address == PCIAddress(testing: text))
        #expect(address.description == text)
    }

    @Test("rejects anything else", arguments: ["", "03:00.0", "0000:03:00", "0000:3:00.0", "0000:03:0.0", "0000:03:00.00",
                                             "0000:03:20.0", "0000:03:00.8", "0000:0g:00.0", "+000:03:00.0",
                                             "0000:+3:00.0", "0000:03:+0.0", "0000:03:00.+", "0000:03:00:0", " 0000:03:00.0"])
    func rejects(text: String) {
        #expect(PCIAddress(text) == nil)
    }

    @Test("orders by domain, bus, device, function; names the root bus")
    func orderAndRootBus() {
        let sorted = ["0000:00:1f.3", "0000:03:00.0", "0000:00:02.0", "0001:00:00.0", "0000:00:1f.0"]
            .map { PCIAddress(testing: $0) }.sorted()
        #expect(sorted.map(\.description) == ["0000:00:02.0", "0000:00:1f.0", "0000:00:1f.3", "0000:03:00.0", "0001:00:00.0"])
        #expect(PCIAddress(testing: "0001:80:00.0").rootBusName == "pci0001:80")
    }
}
