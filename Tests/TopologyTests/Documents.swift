/// Small machine documents for the tests.
enum Documents {
    static let intelUnit = #"{ "name": "dmar0", "family": "intel" }"#

    /// A document with the given units (default: one Intel unit `dmar0`),
    /// optional driver declarations and device objects.
    static func machine(units: [String] = [intelUnit], drivers: [String]? = nil, devices: [String]) -> String {
        var members = [#""iommu_units": ["# + units.joined(separator: ", ") + "]"]
        if let drivers { members.append(#""drivers": ["# + drivers.joined(separator: ", ") + "]") }
        members.append(#""devices": [\#n  "# + devices.joined(separator: ",\n  ") + "\n]")
        return "{ " + members.joined(separator: ",\n") + " }"
    }

    /// A device object; the values are JSON texts, `more` adds members.
    static func device(_ address: String, vendor: String = #""0x8086""#, class classCode: String = #""0x020000""#,
                       iommu: String = #""dmar0""#, group: String = #""g""#, more: String = "") -> String {
        #"{ "address": "\#(address)", "vendor": \#(vendor), "device": "0x1234", "class": \#(classCode), "#
            + #""iommu": \#(iommu), "group": \#(group)"# + (more.isEmpty ? "" : ", " + more) + " }"
    }

    /// A PCI-to-PCI bridge (a root port) in group `group`.
    static func bridge(_ address: String, group: String = #""g""#, more: String = "") -> String {
        device(address, class: #""0x060400""#, group: group, more: more)
    }
}

/// Short name for the document builders in tables.
typealias D = Documents
