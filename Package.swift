// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "iommufs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "iommufs", targets: ["iommufs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // The C shim over libfuse3's low-level API (found with pkg-config fuse3).
        .systemLibrary(
            name: "CFuse",
            path: "CFuse",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        // The kernel model: groups, devices, domains, DMA ownership, the type store.
        .target(
            name: "IOMMUCore",
            dependencies: [.product(name: "SystemPackage", package: "swift-system")]
        ),
        // Machine descriptions: JSON documents, validation, the embedded default machine.
        .target(
            name: "Topology",
            dependencies: ["IOMMUCore", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // A kernfs-like node tree built from the model.
        .target(
            name: "Sysfs",
            dependencies: ["IOMMUCore", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // The libfuse low-level session serving a Sysfs tree.
        .target(
            name: "FuseServer",
            dependencies: [
                "CFuse", "Sysfs", "IOMMUCore",
                .product(name: "SystemPackage", package: "swift-system"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The control socket: VFIO/iommufd users, deferred attach, fault
        // injection, the kernel log, state dumps and event traces.
        .target(
            name: "Control",
            dependencies: [
                "IOMMUCore", "Topology",
                .product(name: "SystemPackage", package: "swift-system"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "iommufs",
            dependencies: [
                "CFuse", "IOMMUCore", "Topology", "Sysfs", "FuseServer", "Control",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The fuzz targets: each entry point that takes outside input, as a
        // function of one input that checks its properties.
        .target(
            name: "Fuzzing",
            dependencies: ["IOMMUCore", "Topology", "Sysfs", "Control", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // The fuzz targets as a program: under libFuzzer (`make fuzz-inputs`
        // builds it with --sanitize=fuzzer -DLIBFUZZER), or run on files.
        .executableTarget(name: "iommufs-fuzz", dependencies: ["Fuzzing"]),
        // Helpers more than one test target uses.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "IOMMUCoreTests", dependencies: ["IOMMUCore", "Topology", "TestSupport"]),
        .testTarget(name: "TopologyTests", dependencies: [
            "Topology", "IOMMUCore", .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .testTarget(name: "SysfsTests", dependencies: ["Sysfs"]),
        // Fixtures/oracle: the real-kernel transcripts, read from the source tree.
        .testTarget(name: "IntegrationTests", dependencies: [
            "Topology", "IOMMUCore", "Control", "TestSupport", .product(name: "SystemPackage", package: "swift-system"),
        ], exclude: ["Fixtures"]),
        .testTarget(name: "FuzzingTests", dependencies: ["Fuzzing"]),
    ],
    swiftLanguageModes: [.v6]
)
