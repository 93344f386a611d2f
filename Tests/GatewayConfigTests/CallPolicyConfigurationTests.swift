import GatewayConfig
import Testing

/// `routers.<r>.tools|resources|prompts` and `routers.<r>.policies` as the loader reads them.
@Suite struct CallPolicyConfigurationTests {
    static func yaml(_ router: String) -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    routers:
      r:
        rule: "PathPrefix(`/r`)"
        service: s
    \(router)
    services:
      s: { http: { url: "http://127.0.0.1:1/mcp" } }
    """ }

    @Test func rulesAndPoliciesOfEveryKind() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("""
            tools: {allow: ["get_*", "list_*"], deny: ["*_secret"]}
            resources: {deny: ["file:///private/*"]}
            policies:
              - teams: ["acme/sre"]
                allow: ["*"]
              - users: ["intern-bot"]
                orgs: ["acme"]
                deny: ["restart_*"]
                prompts: {allow: ["ops_*"]}
        """))
        let policy = configuration.routers[0].callPolicy
        #expect(policy.rules[.tools] == .init(allow: ["get_*", "list_*"], deny: ["*_secret"]))
        #expect(policy.rules[.resources] == .init(allow: nil, deny: ["file:///private/*"]))
        #expect(policy.rules[.prompts] == nil)
        #expect(policy.policies.count == 2)
        #expect(policy.policies[0].teams == ["acme/sre"] && policy.policies[0].rules[.tools] == .init(allow: ["*"]))
        #expect(policy.policies[1].users == ["intern-bot"] && policy.policies[1].orgs == ["acme"])
        #expect(policy.policies[1].rules[.tools] == .init(deny: ["restart_*"]) && policy.policies[1].rules[.prompts] == .init(allow: ["ops_*"]))
        #expect(try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("")).routers[0].callPolicy.isEmpty)
    }

    @Test func everyMistakeIsReportedWithItsPosition() {
        let yaml = Self.yaml("""
            tools: {allow: "get_*", deny: [""]}
            prompts: {hide: ["x"]}
            policies:
              - allow: ["*"]
              - users: ["bob"]
              - teams: ["just-a-team"]
                deny: ["x"]
              - users: ["carol"]
                allow: ["a"]
                tools: {deny: ["b"]}
        """)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "p.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("p.yaml:7:20: routers.r.tools.allow: expected a list"), "\(text)")
            #expect(text.contains("routers.r.tools.deny[0]: an empty pattern names nothing"), "\(text)")
            #expect(text.contains("p.yaml:8:15: routers.r.prompts.hide: unknown key \"hide\""), "\(text)")
            #expect(text.contains("p.yaml:10:9: routers.r.policies[0]: a policy names whom it applies to"), "\(text)")
            #expect(text.contains("routers.r.policies[1]: a policy needs allow or deny"), "\(text)")
            #expect(text.contains("routers.r.policies[2].teams[0]: team \"just-a-team\" must be written as org/team-slug"), "\(text)")
            #expect(text.contains("routers.r.policies[3]: write a policy's tool rules either as allow/deny or under tools, not both"), "\(text)")
        }
    }
}
