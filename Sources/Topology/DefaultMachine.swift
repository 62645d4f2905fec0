extension Topology {
    /// The default machine as a document: a desktop with one VT-d unit whose
    /// eight groups show the cases people ask about (a GPU sharing a group
    /// with its audio function, an RMRR, bridges grouped with what is behind
    /// them, an unbound SR-IOV NIC with ATS that igb matches, an untrusted
    /// Thunderbolt device, a driver that wants identity). It is a string in the source, not a bundle resource,
    /// so the binary works wherever it is copied. Group labels are the ids
    /// the machine boots with.
    public static let defaultMachineJSON = #"""
    {
      "kernel": { "command_line": "intel_iommu=on", "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel",
          "reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }
      ],
      "devices": [
        { "address": "0000:00:00.0", "vendor": "0x8086", "device": "0x3e30", "class": "0x060000",
          "iommu": "dmar0", "group": 0 },

        { "address": "0000:00:01.0", "vendor": "0x8086", "device": "0x1901", "class": "0x060400", "pcie_type": "root-port",
          "iommu": "dmar0", "group": 1, "driver": "pcieport" },
        { "address": "0000:01:00.0", "vendor": "0x10de", "device": "0x1f82", "class": "0x030000", "pcie_type": "endpoint",
          "parent": "0000:00:01.0", "iommu": "dmar0", "group": 1, "driver": "nouveau" },
        { "address": "0000:01:00.1", "vendor": "0x10de", "device": "0x10fa", "class": "0x040300", "pcie_type": "endpoint",
          "parent": "0000:00:01.0", "iommu": "dmar0", "group": 1, "driver": "snd_hda_intel" },

        { "address": "0000:00:14.0", "vendor": "0x8086", "device": "0xa36d", "class": "0x0c0330",
          "iommu": "dmar0", "group": 2, "driver": "xhci_hcd",
          "reserved_regions": [ { "start": "0x3e2e0000", "end": "0x3e2fffff", "type": "direct-relaxable" } ] },

        { "address": "0000:00:1c.0", "vendor": "0x8086", "device": "0xa338", "class": "0x060400", "pcie_type": "root-port",
          "iommu": "dmar0", "group": 3, "driver": "pcieport" },
        { "address": "0000:02:00.0", "vendor": "0x144d", "device": "0xa808", "class": "0x010802", "pcie_type": "endpoint",
          "parent": "0000:00:1c.0", "iommu": "dmar0", "group": 3, "driver": "nvme" },

        { "address": "0000:00:1c.4", "vendor": "0x8086", "device": "0xa33c", "class": "0x060400", "pcie_type": "root-port",
          "iommu": "dmar0", "group": 4, "driver": "pcieport" },
        { "address": "0000:03:00.0", "vendor": "0x8086", "device": "0x1521", "class": "0x020000", "pcie_type": "endpoint",
          "parent": "0000:00:1c.4", "iommu": "dmar0", "group": 4, "native_driver": "igb", "ats": true,
          "sriov": { "total_vfs": 7, "offset": 128, "stride": 4, "vf_device": "0x1520", "vf_driver": "igbvf" } },

        { "address": "0000:00:1d.0", "vendor": "0x8086", "device": "0xa330", "class": "0x060400", "pcie_type": "root-port",
          "iommu": "dmar0", "group": 5, "driver": "pcieport" },
        { "address": "0000:04:00.0", "vendor": "0x8086", "device": "0x15f2", "class": "0x020000", "pcie_type": "endpoint",
          "parent": "0000:00:1d.0", "iommu": "dmar0", "group": 5, "untrusted": true },

        { "address": "0000:00:1e.0", "vendor": "0x8086", "device": "0x244e", "class": "0x060401",
          "iommu": "dmar0", "group": 6 },
        { "address": "0000:05:00.0", "vendor": "0x10ec", "device": "0x8139", "class": "0x020000",
          "parent": "0000:00:1e.0", "iommu": "dmar0", "group": 6, "driver": "8139too" },
        { "address": "0000:05:01.0", "vendor": "0x1033", "device": "0x0035", "class": "0x0c0310",
          "parent": "0000:00:1e.0", "iommu": "dmar0", "group": 6 },

        { "address": "0000:00:1f.0", "vendor": "0x8086", "device": "0xa306", "class": "0x060100",
          "iommu": "dmar0", "group": 7,
          "reserved_regions": [ { "start": "0x0", "end": "0xffffff", "type": "direct-relaxable" } ] },
        { "address": "0000:00:1f.3", "vendor": "0x8086", "device": "0xa348", "class": "0x040300",
          "iommu": "dmar0", "group": 7, "driver": "snd_hda_intel", "def_domain_type": "identity" },
        { "address": "0000:00:1f.4", "vendor": "0x8086", "device": "0xa323", "class": "0x0c0500",
          "iommu": "dmar0", "group": 7, "driver": "i801_smbus" }
      ]
    }
    """#
}
