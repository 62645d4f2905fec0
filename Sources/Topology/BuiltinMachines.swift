extension Topology {
    /// The oracle's first machine (/work/shared/oracle/README.md): QEMU 7.2
    /// q35 with `-device intel-iommu,intremap=on,caching-mode=on`, on which
    /// the Linux 6.12 and 6.1 transcripts were printed. Caching mode makes
    /// the kernel force strict invalidation, so every group boots as `DMA`.
    /// rp6 (00:06.0) has ACS disabled, so the e1000e behind it shares its
    /// group; the ICH9 functions share group 9 and the LPC bridge carries
    /// VT-d's ISA/floppy 1:1 window. Group labels are the booted ids.
    public static let qemuQ35VTdJSON = #"""
    {
      "kernel": { "command_line": "console=ttyS0 panic=-1 intel_iommu=on no_timer_check oracle.mode=full",
                  "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel", "forces_strict": true,
          "registers": { "address": "0xfed90000", "cap": "0xd2008c22260286", "ecap": "0xf00f4a", "version": "0x10" },
          "reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }
      ],
      "devices": [
        { "address": "0000:00:00.0", "vendor": "0x8086", "device": "0x29c0", "class": "0x060000",
          "iommu": "dmar0", "group": 0 },
        { "address": "0000:00:01.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f",
          "iommu": "dmar0", "group": 1, "driver": "pcieport" },
        { "address": "0000:00:02.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f",
          "iommu": "dmar0", "group": 2, "driver": "pcieport" },
        { "address": "0000:00:03.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f",
          "iommu": "dmar0", "group": 3, "driver": "pcieport" },
        { "address": "0000:00:04.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f",
          "iommu": "dmar0", "group": 4, "driver": "pcieport" },
        { "address": "0000:00:05.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f",
          "iommu": "dmar0", "group": 5, "driver": "pcieport" },
        { "address": "0000:00:06.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer"],
          "iommu": "dmar0", "group": 6, "driver": "pcieport" },
        { "address": "0000:00:07.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f",
          "iommu": "dmar0", "group": 7, "driver": "pcieport" },
        { "address": "0000:00:08.0", "vendor": "0x8086", "device": "0x100e", "class": "0x020000",
          "iommu": "dmar0", "group": 8, "driver": "e1000" },
        { "address": "0000:00:1f.0", "vendor": "0x8086", "device": "0x2918", "class": "0x060100",
          "iommu": "dmar0", "group": 9,
          "reserved_regions": [ { "start": "0x0", "end": "0xffffff", "type": "direct-relaxable" } ] },
        { "address": "0000:00:1f.2", "vendor": "0x8086", "device": "0x2922", "class": "0x010601",
          "capabilities": ["msi", "sata"],
          "iommu": "dmar0", "group": 9, "driver": "ahci" },
        { "address": "0000:00:1f.3", "vendor": "0x8086", "device": "0x2930", "class": "0x0c0500",
          "iommu": "dmar0", "group": 9 },
        { "address": "0000:01:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:01.0", "iommu": "dmar0", "group": 10, "driver": "e1000e" },
        { "address": "0000:02:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"],
          "parent": "0000:00:02.0", "iommu": "dmar0", "group": 11, "driver": "nvme" },
        { "address": "0000:03:00.0", "vendor": "0x1af4", "device": "0x1041", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["msix", "vendor", "vendor", "vendor", "vendor", "vendor", "pm", "pcie"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "virtio-pci" },
        { "address": "0000:04:00.0", "vendor": "0x1b36", "device": "0x000e", "class": "0x060400",
          "pcie_type": "pcie-pci-bridge",
          "parent": "0000:00:04.0", "iommu": "dmar0", "group": 13 },
        { "address": "0000:05:01.0", "vendor": "0x8086", "device": "0x100e", "class": "0x020000",
          "parent": "0000:04:00.0", "iommu": "dmar0", "group": 13, "driver": "e1000" },
        { "address": "0000:05:02.0", "vendor": "0x8086", "device": "0x100e", "class": "0x020000",
          "parent": "0000:04:00.0", "iommu": "dmar0", "group": 13, "driver": "e1000" },
        { "address": "0000:06:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:05.0", "iommu": "dmar0", "group": 14, "driver": "e1000e" },
        { "address": "0000:06:00.1", "vendor": "0x1af4", "device": "0x1041", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["msix", "vendor", "vendor", "vendor", "vendor", "vendor", "pm", "pcie"],
          "parent": "0000:00:05.0", "iommu": "dmar0", "group": 14, "driver": "virtio-pci" },
        { "address": "0000:07:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:06.0", "iommu": "dmar0", "group": 6, "driver": "e1000e" },
        { "address": "0000:08:00.0", "vendor": "0x1234", "device": "0x11e8", "class": "0x00ff00",
          "parent": "0000:00:07.0", "iommu": "dmar0", "group": 15 }
      ]
    }
    """#

    /// The oracle's second machine ("alt", /work/shared/oracle/README.md
    /// "Second machine"): the same QEMU 7.2 q35 and caching-mode VT-d, with
    /// six ACS root ports RA1-RA6; an x3130 switch behind RA1 whose two
    /// downstream ports lack ACS, so each NVMe shares its port's group; an
    /// SR-IOV NVMe PF behind RA2 (3 VFs, offset 1, stride 1, VF device
    /// 0x0010, VFs driven by nvme); a 3-function device behind RA3 (one
    /// group at boot); the hotplug NIC behind RA4; virtio-blk behind RA5;
    /// and a driverless pci-testdev behind RA6. Reset methods are the
    /// transcript's `reset_method` values (none on root ports, the host
    /// bridge and ICH9). Group labels are the booted ids. QEMU's virtio fn1
    /// of the 3-function device has the multifunction bit clear in its own
    /// header, so a rescan puts it in a group of its own.
    public static let qemuQ35AltJSON = #"""
    {
      "kernel": { "command_line": "console=ttyS0 panic=-1 intel_iommu=on no_timer_check oracle.mode=full oracle.machine=alt oracle.scenario=pci",
                  "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel", "forces_strict": true,
          "registers": { "address": "0xfed90000", "cap": "0xd2008c22260286", "ecap": "0xf00f4a", "version": "0x10" },
          "reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }
      ],
      "devices": [
        { "address": "0000:00:00.0", "vendor": "0x8086", "device": "0x29c0", "class": "0x060000",
          "iommu": "dmar0", "group": 0, "reset_methods": [] },
        { "address": "0000:00:01.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 1 },
          "iommu": "dmar0", "group": 1, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:02.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 2 },
          "iommu": "dmar0", "group": 2, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:03.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 3 },
          "iommu": "dmar0", "group": 3, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:04.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 4, "hotplug": true },
          "iommu": "dmar0", "group": 4, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:05.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 5 },
          "iommu": "dmar0", "group": 5, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:06.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 6 },
          "iommu": "dmar0", "group": 6, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:1f.0", "vendor": "0x8086", "device": "0x2918", "class": "0x060100",
          "iommu": "dmar0", "group": 7, "reset_methods": [],
          "reserved_regions": [ { "start": "0x0", "end": "0xffffff", "type": "direct-relaxable" } ] },
        { "address": "0000:00:1f.2", "vendor": "0x8086", "device": "0x2922", "class": "0x010601",
          "capabilities": ["msi", "sata"],
          "iommu": "dmar0", "group": 7, "driver": "ahci", "reset_methods": [] },
        { "address": "0000:00:1f.3", "vendor": "0x8086", "device": "0x2930", "class": "0x0c0500",
          "iommu": "dmar0", "group": 7, "reset_methods": [] },
        { "address": "0000:01:00.0", "vendor": "0x104c", "device": "0x8232", "class": "0x060400",
          "pcie_type": "upstream", "capabilities": ["pcie", "ssvid", "msi"], "extended_capabilities": ["aer"],
          "parent": "0000:00:01.0", "iommu": "dmar0", "group": 8, "driver": "pcieport", "reset_methods": ["flr", "bus"] },
        { "address": "0000:02:00.0", "vendor": "0x104c", "device": "0x8233", "class": "0x060400",
          "pcie_type": "downstream", "capabilities": ["pcie", "ssvid", "msi"], "extended_capabilities": ["aer"], "pcie_slot": { "number": 0 },
          "parent": "0000:01:00.0", "iommu": "dmar0", "group": 9, "driver": "pcieport", "reset_methods": ["flr", "bus"] },
        { "address": "0000:02:01.0", "vendor": "0x104c", "device": "0x8233", "class": "0x060400",
          "pcie_type": "downstream", "capabilities": ["pcie", "ssvid", "msi"], "extended_capabilities": ["aer"], "pcie_slot": { "number": 1 },
          "parent": "0000:01:00.0", "iommu": "dmar0", "group": 10, "driver": "pcieport", "reset_methods": ["flr"] },
        { "address": "0000:03:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"],
          "parent": "0000:02:00.0", "iommu": "dmar0", "group": 9, "driver": "nvme", "reset_methods": ["flr", "bus"] },
        { "address": "0000:04:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"],
          "parent": "0000:02:01.0", "iommu": "dmar0", "group": 10, "driver": "nvme", "reset_methods": ["flr", "bus"] },
        { "address": "0000:05:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"], "extended_capabilities": ["ari", "sriov"],
          "parent": "0000:00:02.0", "iommu": "dmar0", "group": 11, "driver": "nvme", "reset_methods": ["flr", "bus"],
          "sriov": { "total_vfs": 3, "offset": 1, "stride": 1, "vf_device": "0x0010", "vf_driver": "nvme" } },
        { "address": "0000:06:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "e1000e", "reset_methods": ["pm", "bus"] },
        { "address": "0000:06:00.1", "vendor": "0x1af4", "device": "0x1041", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["msix", "vendor", "vendor", "vendor", "vendor", "vendor", "pm", "pcie"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "virtio-pci", "reset_methods": ["flr", "pm"],
          "multifunction": false },
        { "address": "0000:06:00.2", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "e1000e", "reset_methods": ["pm"] },
        { "address": "0000:07:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:04.0", "iommu": "dmar0", "group": 13, "driver": "e1000e", "reset_methods": ["pm", "bus"] },
        { "address": "0000:08:00.0", "vendor": "0x1af4", "device": "0x1042", "class": "0x010000",
          "pcie_type": "endpoint", "capabilities": ["msix", "vendor", "vendor", "vendor", "vendor", "vendor", "pm", "pcie"],
          "parent": "0000:00:05.0", "iommu": "dmar0", "group": 14, "driver": "virtio-pci", "reset_methods": ["flr", "pm", "bus"] },
        { "address": "0000:09:00.0", "vendor": "0x1b36", "device": "0x0005", "class": "0x00ff00",
          "parent": "0000:00:06.0", "iommu": "dmar0", "group": 15, "reset_methods": ["bus"] }
      ],
      "slots": [
        { "name": "0", "address": "0000:03:00", "driver": "acpiphp" },
        { "name": "0-2", "address": "0000:04:00", "driver": "acpiphp" },
        { "name": "0-3", "address": "0000:07:00", "driver": "acpiphp", "link_active_reporting": true }
      ]
    }
    """#

    /// Machines `iommufs mount --machine NAME` serves, by name: `default`
    /// (the embedded desktop) and the oracle's machines.
    public static let builtinMachines: [(name: String, summary: String, json: String)] = [
        ("default", "the embedded desktop machine (eight groups)", defaultMachineJSON),
        ("qemu-q35-vtd", "the oracle's QEMU q35 with caching-mode VT-d (16 groups, all DMA)", qemuQ35VTdJSON),
        ("qemu-q35-alt", "the oracle's second q35: switch, SR-IOV NVMe, 3-function device (16 groups)", qemuQ35AltJSON),
    ]

    /// The built-in machine called `name` as a document, nil for an unknown name.
    public static func builtinMachine(named name: String) -> TopologyDocument? {
        if name == "default" { return TopologyDocument.defaultMachine }
        guard let entry = builtinMachines.first(where: { $0.name == name }) else { return nil }
        do {
            return try TopologyDocument(entry.json.utf8, source: "built-in machine \(name)")
        } catch {
            fatalError("the built-in machine \(name) is invalid: \(error)")
        }
    }
}
