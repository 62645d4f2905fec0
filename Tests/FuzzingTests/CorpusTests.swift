import Fuzzing
import Testing

@Suite struct CorpusTests {
    @Test(arguments: FuzzTarget.allCases)
    func corpus(_ target: FuzzTarget) throws {
    }
}
