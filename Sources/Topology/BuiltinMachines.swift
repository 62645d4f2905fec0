extension Topology {
    /// The oracle's first machine (Tests/IntegrationTests/Fixtures/oracle/ORACLE.md): QEMU 7.2
    /// q35 with `-device intel-iommu,intremap=on,caching-mode=on`, on which
    /// the Linux 6.12 and 6.1 transcripts were printed. Caching mode makes
    /// the kernel force strict invalidation (the `cap` register has bit 7 set), so every group boots as `DMA`.
    /// rp6 (00:06.0) has ACS disabled, so the e1000e behind it shares its
    /// group; the ICH9 functions share group 9 and the LPC bridge carries
    /// VT-d's ISA/floppy 1:1 window. Group labels are the booted ids.
    public static let qemuQ35VTdJSON = #"""
    {
      "kernel": { "command_line": "console=ttyS0 panic=-1 intel_iommu=on no_timer_check oracle.mode=full",
                  "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel",
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

    /// The oracle's second machine ("alt", Tests/IntegrationTests/Fixtures/oracle/ORACLE.md
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
    /// header, so a rescan puts it in a group of its own. BARs, ROMs and
    /// windows are the ones the transcript's rescans print (devices it never
    /// rescans, like the PF, have none). The windows of RA1, RA3, RA4 and
    /// RA5 are not printed: each starts where the kernel's first fit put
    /// the first resource in it and ends at the 1 MiB (I/O: 4 KiB) boundary
    /// after the last one, the smallest window that reproduces the log.
    public static let qemuQ35AltJSON = #"""
    {
      "kernel": { "command_line": "console=ttyS0 panic=-1 intel_iommu=on no_timer_check oracle.mode=full oracle.machine=alt oracle.scenario=pci",
                  "config_default": "lazy" },
      "iommu_units": [
        { "name": "dmar0", "family": "intel",
          "registers": { "address": "0xfed90000", "cap": "0xd2008c22260286", "ecap": "0xf00f4a", "version": "0x10" },
          "reserved_regions": [ { "start": "0xfee00000", "end": "0xfeefffff", "type": "msi" } ] }
      ],
      "devices": [
        { "address": "0000:00:00.0", "vendor": "0x8086", "device": "0x29c0", "class": "0x060000",
          "iommu": "dmar0", "group": 0, "reset_methods": [] },
        { "address": "0000:00:01.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 1 },
          "iommu": "dmar0", "group": 1, "driver": "pcieport", "reset_methods": [],
          "windows": { "mem": { "base": "0xfce00000", "limit": "0xfd1fffff" }, "prefmem": { "base": "0xfde00000", "limit": "0xfe1fffff", "64bit": true } } },
        { "address": "0000:00:02.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 2 },
          "iommu": "dmar0", "group": 2, "driver": "pcieport", "reset_methods": [] },
        { "address": "0000:00:03.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 3 },
          "iommu": "dmar0", "group": 3, "driver": "pcieport", "reset_methods": [],
          "windows": { "io": { "base": "0xe000", "limit": "0xefff" }, "mem": { "base": "0xfd800000", "limit": "0xfd9fffff" }, "prefmem": { "base": "0xfe800000", "limit": "0xfe8fffff", "64bit": true } } },
        { "address": "0000:00:04.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 4, "hotplug": true },
          "iommu": "dmar0", "group": 4, "driver": "pcieport", "reset_methods": [],
          "windows": { "io": { "base": "0xd000", "limit": "0xdfff" }, "mem": { "base": "0xfd600000", "limit": "0xfd6fffff" } } },
        { "address": "0000:00:05.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 5 },
          "iommu": "dmar0", "group": 5, "driver": "pcieport", "reset_methods": [],
          "windows": { "mem": { "base": "0xfd400000", "limit": "0xfd4fffff" }, "prefmem": { "base": "0xfe400000", "limit": "0xfe4fffff", "64bit": true } } },
        { "address": "0000:00:06.0", "vendor": "0x1b36", "device": "0x000c", "class": "0x060400",
          "pcie_type": "root-port", "capabilities": ["pcie", "msix", "ssvid"], "extended_capabilities": ["aer", "acs"], "acs": "0x5f", "pcie_slot": { "number": 6 },
          "iommu": "dmar0", "group": 6, "driver": "pcieport", "reset_methods": [],
          "windows": { "io": { "base": "0xc000", "limit": "0xcfff" }, "mem": { "base": "0xfd200000", "limit": "0xfd3fffff" }, "prefmem": { "base": "0xfe200000", "limit": "0xfe3fffff", "64bit": true } } },
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
          "parent": "0000:00:01.0", "iommu": "dmar0", "group": 8, "driver": "pcieport", "reset_methods": ["flr", "bus"],
          "windows": { "mem": { "base": "0xfce00000", "limit": "0xfd1fffff" }, "prefmem": { "base": "0xfde00000", "limit": "0xfe1fffff", "64bit": true } } },
        { "address": "0000:02:00.0", "vendor": "0x104c", "device": "0x8233", "class": "0x060400",
          "pcie_type": "downstream", "capabilities": ["pcie", "ssvid", "msi"], "extended_capabilities": ["aer"], "pcie_slot": { "number": 0 },
          "parent": "0000:01:00.0", "iommu": "dmar0", "group": 9, "driver": "pcieport", "reset_methods": ["flr", "bus"],
          "windows": { "mem": { "base": "0xfd000000", "limit": "0xfd1fffff" }, "prefmem": { "base": "0xfe000000", "limit": "0xfe1fffff", "64bit": true } } },
        { "address": "0000:02:01.0", "vendor": "0x104c", "device": "0x8233", "class": "0x060400",
          "pcie_type": "downstream", "capabilities": ["pcie", "ssvid", "msi"], "extended_capabilities": ["aer"], "pcie_slot": { "number": 1 },
          "parent": "0000:01:00.0", "iommu": "dmar0", "group": 10, "driver": "pcieport", "reset_methods": ["flr"],
          "windows": { "mem": { "base": "0xfce00000", "limit": "0xfcffffff" }, "prefmem": { "base": "0xfde00000", "limit": "0xfdffffff", "64bit": true } } },
        { "address": "0000:03:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"],
          "parent": "0000:02:00.0", "iommu": "dmar0", "group": 9, "driver": "nvme", "reset_methods": ["flr", "bus"],
          "bars": [ { "index": 0, "type": "mem", "64bit": true, "base": "0xfd000000", "size": "0x4000" } ] },
        { "address": "0000:04:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"],
          "parent": "0000:02:01.0", "iommu": "dmar0", "group": 10, "driver": "nvme", "reset_methods": ["flr", "bus"],
          "bars": [ { "index": 0, "type": "mem", "64bit": true, "base": "0xfce00000", "size": "0x4000" } ] },
        { "address": "0000:05:00.0", "vendor": "0x1b36", "device": "0x0010", "class": "0x010802",
          "pcie_type": "endpoint", "capabilities": ["msix", "pcie", "pm"], "extended_capabilities": ["ari", "sriov"],
          "parent": "0000:00:02.0", "iommu": "dmar0", "group": 11, "driver": "nvme", "reset_methods": ["flr", "bus"],
          "sriov": { "total_vfs": 3, "offset": 1, "stride": 1, "vf_device": "0x0010", "vf_driver": "nvme" } },
        { "address": "0000:06:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "e1000e", "reset_methods": ["pm", "bus"],
          "bars": [ { "index": 0, "type": "mem", "base": "0xfd8c0000", "size": "0x20000" }, { "index": 1, "type": "mem", "base": "0xfd8e0000", "size": "0x20000" }, { "index": 2, "type": "io", "base": "0xe000", "size": "0x20" }, { "index": 3, "type": "mem", "base": "0xfd940000", "size": "0x4000" } ],
          "rom": { "base": "0xfd800000", "size": "0x40000" } },
        { "address": "0000:06:00.1", "vendor": "0x1af4", "device": "0x1041", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["msix", "vendor", "vendor", "vendor", "vendor", "vendor", "pm", "pcie"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "virtio-pci", "reset_methods": ["flr", "pm"],
          "bars": [ { "index": 1, "type": "mem", "base": "0xfd948000", "size": "0x1000" }, { "index": 4, "type": "mem", "64bit": true, "prefetchable": true, "base": "0xfe800000", "size": "0x4000" } ],
          "rom": { "base": "0xfd840000", "size": "0x40000" },
          "multifunction": false },
        { "address": "0000:06:00.2", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:03.0", "iommu": "dmar0", "group": 12, "driver": "e1000e", "reset_methods": ["pm"],
          "bars": [ { "index": 0, "type": "mem", "base": "0xfd900000", "size": "0x20000" }, { "index": 1, "type": "mem", "base": "0xfd920000", "size": "0x20000" }, { "index": 2, "type": "io", "base": "0xe020", "size": "0x20" }, { "index": 3, "type": "mem", "base": "0xfd944000", "size": "0x4000" } ],
          "rom": { "base": "0xfd880000", "size": "0x40000" } },
        { "address": "0000:07:00.0", "vendor": "0x8086", "device": "0x10d3", "class": "0x020000",
          "pcie_type": "endpoint", "capabilities": ["pm", "msi", "pcie", "msix"], "extended_capabilities": ["aer", "dsn"],
          "parent": "0000:00:04.0", "iommu": "dmar0", "group": 13, "driver": "e1000e", "reset_methods": ["pm", "bus"],
          "bars": [ { "index": 0, "type": "mem", "base": "0xfd640000", "size": "0x20000" }, { "index": 1, "type": "mem", "base": "0xfd660000", "size": "0x20000" }, { "index": 2, "type": "io", "base": "0xd000", "size": "0x20" }, { "index": 3, "type": "mem", "base": "0xfd680000", "size": "0x4000" } ],
          "rom": { "base": "0xfd600000", "size": "0x40000" } },
        { "address": "0000:08:00.0", "vendor": "0x1af4", "device": "0x1042", "class": "0x010000",
          "pcie_type": "endpoint", "capabilities": ["msix", "vendor", "vendor", "vendor", "vendor", "vendor", "pm", "pcie"],
          "parent": "0000:00:05.0", "iommu": "dmar0", "group": 14, "driver": "virtio-pci", "reset_methods": ["flr", "pm", "bus"],
          "bars": [ { "index": 1, "type": "mem", "base": "0xfd400000", "size": "0x1000" }, { "index": 4, "type": "mem", "64bit": true, "prefetchable": true, "base": "0xfe400000", "size": "0x4000" } ] },
        { "address": "0000:09:00.0", "vendor": "0x1b36", "device": "0x0005", "class": "0x00ff00",
          "parent": "0000:00:06.0", "iommu": "dmar0", "group": 15, "reset_methods": ["bus"],
          "bars": [ { "index": 0, "type": "mem", "base": "0xfd200000", "size": "0x1000" }, { "index": 1, "type": "io", "base": "0xc000", "size": "0x100" } ] }
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
        ("mixed-iommu", "a lab machine behind two VT-d units and an AMD-Vi unit (4 groups, unbound NICs)", mixedIOMMUJSON),
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
