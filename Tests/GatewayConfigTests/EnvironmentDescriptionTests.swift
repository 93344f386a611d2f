import GatewayConfig
import Testing

/// The process environment holds secrets: what holds it never prints it.
@Suite struct EnvironmentDescriptionTests {
    @Test func noValueReachesADescription() {
        let environment = ["GITHUB_CLIENT_SECRET": "s3cr3t-value", "PATH": "/usr/bin"]
        for printed in [
            String(describing: EnvironmentExpander(environment: environment)), String(reflecting: EnvironmentExpander(environment: environment)),
            String(describing: ConfigurationLoader(environment: environment)), String(reflecting: ConfigurationLoader(environment: environment)),
        ] {
            #expect(!printed.contains("s3cr3t-value"), "\(printed)")
            #expect(!printed.contains("GITHUB_CLIENT_SECRET"), "\(printed)")
        }
    }
}
