extension Topology {
    /// A lab machine whose devices sit behind units of two IOMMU drivers:
    /// two VT-d units (`intel-iommu`) and an AMD-Vi unit (`amd_iommu`). No
    /// real platform mixes the two vendors; the machine exists to show what
    /// depends on the driver behind a group, above all that a VFIO
    /// container reuses a domain only for groups whose units have one
    /// driver (`vfio_iommu_type1_attach_group` compares the domains' ops).
    /// Every NIC is unbound, so every group can go to VFIO at once. The AMD-Vi
    /// unit's own PCI function is translated by no IOMMU, as on real hardware.
    public static let mixedIOMMUJSON = #"""
    {
      "kernel": { "command_line": "intel_iommu=on amd_iommu=on", "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel" },
        { "name": "dmar1", "family": "intel" },
        { "name": "ivhd0", "family": "amd", "pci_function": "0000:00:00.2" }
      ],
      "devices": [
        { "address": "0000:00:00.2", "vendor": "0x1022", "device": "0x1481", "class": "0x080600",
          "iommu": null, "group": "amd-iommu" },
        { "address": "0000:00:02.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "iommu": "dmar0", "group": "nic-a", "native_driver": "e1000e" },
        { "address": "0000:00:03.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "iommu": "dmar1", "group": "nic-b", "native_driver": "e1000e" },
        { "address": "0000:00:04.0", "vendor": "0x14e4", "device": "0x16d7", "class": "0x020000",
          "iommu": "ivhd0", "group": "nic-c", "native_driver": "bnxt_en" },
        { "address": "0000:00:05.0", "vendor": "0x14e4", "device": "0x16d7", "class": "0x020000",
          "iommu": "ivhd0", "group": "nic-d", "native_driver": "bnxt_en" }
      ]
    }
    """#
}
