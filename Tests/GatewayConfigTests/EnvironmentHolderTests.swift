import GatewayConfig
import Testing

/// The two values that hold the whole process environment (for `${VAR}`) never show it: loggers
/// print descriptions (service-lifecycle logs its services at debug), errors interpolate them, and
/// `dump` reflects them.
@Suite struct EnvironmentHolderTests {
    static let environment = ["MCPGW_TEST_SECRET": "s3cret-value-123", "PATH": "/usr/bin"]

    /// A value holding a holder, described the default way (as a service without its own
    /// description would be).
    struct Holding<Held> {
        let path = "gateway.yaml"
        let held: Held
    }

    private func shown(_ value: some Any) -> [String] {
        var dumped = ""
        dump(value, to: &dumped)
        return [String(describing: value), String(reflecting: value), "\(value)", dumped]
    }

    @Test func noDescriptionReflectionOrDumpShowsTheEnvironment() {
        let loader = ConfigurationLoader(environment: Self.environment)
        let expander = EnvironmentExpander(environment: Self.environment)
        let texts = shown(loader) + shown(expander) + shown(Holding(held: loader)) + shown(Holding(held: expander))
        for text in texts {
            #expect(!text.contains("s3cret-value-123") && !text.contains("MCPGW_TEST_SECRET") && !text.contains("/usr/bin"), "\(text)")
        }
        #expect(texts.first == "ConfigurationLoader(2 environment variables)")
    }
}
