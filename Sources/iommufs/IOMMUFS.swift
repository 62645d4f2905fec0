import ArgumentParser

@main
struct IOMMUFS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iommufs",
        abstract: "A sysfs-compatible FUSE file system of a machine's IOMMU groups and PCI devices.",
        discussion: """
            iommufs serves /sys/kernel/iommu_groups and the PCI device tree around it. Writes to a \
            group's `type` run a port of the Linux kernel's default-domain logic, with the kernel's \
            errno values and log lines.

            Example:
              mkdir -p mnt && iommufs mount mnt --foreground -o allow_other
              cat mnt/kernel/iommu_groups/*/type
              iommufs ctl --mount mnt vfio attach --container c1 4
            """,
        version: "0.1.0",
        subcommands: [MountCommand.self, CtlCommand.self, GenerateCommand.self]
    )
}
