import Fuzzing
import Glibc

// The fuzz targets as a program. Built by `make fuzz-inputs` with
// `--sanitize=fuzzer -Xswiftc -DLIBFUZZER`, libFuzzer provides `main` and
// calls `LLVMFuzzerTestOneInput` with each input for the target named by
// IOMMUFS_FUZZ_TARGET; a broken property aborts, so that libFuzzer keeps
// the input as a crash. IOMMUFS_FUZZ_IGNORE, texts separated by `|`,
// lets findings that contain one of them pass (a known bug, while it is
// being fixed, so that the fuzzer looks for others). Built normally, it
// runs files through a target:
//
//     iommufs-fuzz store crash-3f2a...       # what the input breaks, exit 1
//     iommufs-fuzz decoder Tests/FuzzCorpus/decoder

#if LIBFUZZER
/// The target of this process, from IOMMUFS_FUZZ_TARGET.
private let target: FuzzTarget = {
    let name = getenv("IOMMUFS_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        report("iommufs-fuzz: set IOMMUFS_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        exit(2)
    }
    return target
}()

/// The texts of IOMMUFS_FUZZ_IGNORE.
private let ignored: [String] = getenv("IOMMUFS_FUZZ_IGNORE").map {
    String(cString: $0).split(separator: "|").map(String.init)
} ?? []

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let findings = target.run(Array(UnsafeBufferPointer(start: data, count: size))).filter { finding in
        !ignored.contains { finding.description.contains($0) }
    }
    guard findings.isEmpty else {
        for finding in findings { report("iommufs-fuzz \(target.rawValue): \(finding)") }
        abort()
    }
    return 0
}
#else
@main
struct FuzzReplay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count > 1 else {
            report("usage: iommufs-fuzz TARGET FILE|DIRECTORY... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            exit(2)
        }
        var broken = 0
        for path in arguments.dropFirst().flatMap(CorpusFiles.paths) {
            let findings: [String]
            do {
                findings = target.run(try CorpusFiles.contents(of: path)).map(\.description)
            } catch {
                findings = ["cannot read it: \(error)"]
            }
            report(findings.isEmpty ? "\(path): ok" : findings.map { "\(path): \($0)" }.joined(separator: "\n"))
            if !findings.isEmpty { broken += 1 }
        }
        exit(broken == 0 ? 0 : 1)
    }
}
#endif

/// One line on stderr.
private func report(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
