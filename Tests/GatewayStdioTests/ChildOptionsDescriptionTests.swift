import GatewayStdio
import Testing

@Suite struct ChildOptionsDescriptionTests {
    @Test func theChildsEnvironmentAndArgumentsAreDescribedWithoutValues() {
        let options = ChildProcess.Options(
            command: "mcp-server-notes", arguments: ["--token=arg-secret"], environment: ["NOTES_API_KEY": "env-secret"], workingDirectory: nil
        )
        for printed in [String(describing: options), String(reflecting: options)] {
            #expect(!printed.contains("env-secret") && !printed.contains("arg-secret"), "\(printed)")
            #expect(printed.contains("NOTES_API_KEY"))
        }
    }
}
