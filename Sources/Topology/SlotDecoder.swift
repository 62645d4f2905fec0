import IOMMUCore

enum SlotKey: String, FieldKey {
    static let byName = nameTable()
    case name, address, driver
    case linkActiveReporting = "link_active_reporting", maxBusSpeed = "max_bus_speed", curBusSpeed = "cur_bus_speed"
}

/// The `slots` key: hot-plug slots, each on the bus of a listed device.
enum SlotDecoder {
    /// The hot-plug drivers whose slots the core models.
    static let drivers = [(name: "acpiphp", value: "acpiphp")]

    /// The slots of a document whose devices are `devices`: names unique,
    /// each on a bus some device is on (a root bus or a bridge's).
    static func slots(_ json: JSON, devices: [MachineSpec.DeviceSpec]) throws(Problem) -> [MachineSpec.SlotSpec] {
        let slots = try ValueDecoder.array(of: ValueDecoder(slot)).decode(json)
        let buses = Set(devices.map { PCIBusNumber(of: $0.address) })
        var names: [String: Int] = [:]
        for (position, slot) in slots.enumerated() {
            if let first = names.updateValue(position, forKey: slot.name) {
                throw Problem(quoted(slot.name) + " is already the name of slots[\(first)]", at: .index(position), .key(SlotKey.name.rawValue))
            }
            guard buses.contains(slot.bus) else {
                throw Problem("no listed device is on bus \(slot.bus)", at: .index(position), .key(SlotKey.address.rawValue))
            }
        }
        return slots
    }

    static func slot(_ json: JSON) throws(Problem) -> MachineSpec.SlotSpec {
        let fields = try Fields<SlotKey>(json)
        let name = try fields.required(.name, .name)
        let text = try fields.required(.address, .string)
        // A slot's address is its device's without the function.
        guard let address = parsePCIAddress(text + ".0") else {
            throw Problem(quoted(text) + " is not a slot address (expected dddd:bb:dd)", at: .key(SlotKey.address.rawValue))
        }
        _ = try fields.required(.driver, .choice(drivers, "hot-plug driver"))
        return MachineSpec.SlotSpec(
            name: name, bus: PCIBusNumber(of: address), device: address.device,
            linkActiveReporting: try fields.optional(.linkActiveReporting, .bool) ?? false,
            maxBusSpeed: try fields.optional(.maxBusSpeed, .string) ?? "Unknown",
            currentBusSpeed: try fields.optional(.curBusSpeed, .string) ?? "Unknown")
    }
}
