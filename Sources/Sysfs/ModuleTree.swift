import IOMMUCore

/// `/sys/module`: the modules whose parameters the machine's logic reads.
/// For now the vfio module's `parameters/` (`module_param_sysfs_setup`).
extension MachineTree {
    /// `module/vfio/parameters/enable_unsafe_noiommu_mode` (0644, S_IRUGO |
    /// S_IWUSR): a bool parameter, shown by `param_get_bool` (`Y`/`N`) and
    /// stored by `param_attr_store` → `param_set_bool` (kstrtobool; EINVAL).
    func addModuleParameters() {
        let parameters = tree.makeDirectories(Paths.vfioModule + "/parameters")
        tree.makeAttribute("enable_unsafe_noiommu_mode", in: parameters, permissions: 0o644,
                           show: { [machine] in .success(Array(machine.noIOMMUModeText.utf8)) },
                           store: { [machine] buffer, _ in
                               machine.storeNoIOMMUMode(buffer).map { .failure($0) } ?? .success(buffer.count)
                           })
    }
}
