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

/// `services.<s>.group` and `services.<s>.tags` as the loader reads them.
@Suite struct GroupConfigurationTests {
    static func yaml(_ services: String) -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    routers:
      r: { rule: "PathPrefix(`/r`)", service: all }
    services:
    \(services)
    """ }

    @Test func aGroupWithDefaultsAndTaggedMembers() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("""
          a: { tags: [prod, eu], http: { url: "http://127.0.0.1:1/mcp" } }
          b: { tags: [prod], stdio: { command: "true" } }
          all: { group: { members: [a, b] } }
          loud: { group: { members: [b], prefix: always, separator: ".", broadcast: true, broadcastTimeout: 5s } }
        """))
        guard case .group(let all)? = configuration.services["all"], case .group(let loud)? = configuration.services["loud"],
              case .http(let a)? = configuration.services["a"], case .stdio(let b)? = configuration.services["b"]
        else {
            Issue.record("services not read")
            return
        }
        #expect(all.members == ["a", "b"] && all.prefix == .conditional && all.separator == "__" && !all.broadcast && all.broadcastTimeout == .seconds(30))
        #expect(loud.prefix == .always && loud.separator == "." && loud.broadcast && loud.broadcastTimeout == .seconds(5))
        #expect(a.tags == ["prod", "eu"] && b.tags == ["prod"])
    }

    @Test func everyMistakeIsReportedWithItsPosition() {
        let yaml = Self.yaml("""
          a: { http: { url: "http://127.0.0.1:1/mcp" }, tags: ["no spaces"] }
          all: { group: { members: [a, ghost, all, inner, a], prefix: sometimes, separator: "/" } }
          inner: { group: { members: [] } }
          both: { http: { url: "http://127.0.0.1:1/mcp" }, group: { members: [a] } }
        """)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "g.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("services.a.tags: tag \"no spaces\" must be letters"), "\(text)")
            #expect(text.contains("g.yaml:7:32: services.all.group.members: service \"ghost\" is not defined"), "\(text)")
            #expect(text.contains("services.all.group.members: a group cannot be its own member"), "\(text)")
            #expect(text.contains("services.all.group.members: service \"inner\" is a group"), "\(text)")
            #expect(text.contains("services.all.group.members: service \"a\" is listed twice"), "\(text)")
            #expect(text.contains("services.all.group.prefix: prefix must be always, conditional or never"), "\(text)")
            #expect(text.contains("services.all.group.separator: separator must be letters"), "\(text)")
            #expect(text.contains("services.inner.group.members: a group needs at least one member"), "\(text)")
            #expect(text.contains("services.both: a service is one of \"http\", \"stdio\", \"sse\" or \"group\", not http and group"), "\(text)")
        }
    }
}

/// `routers.<r>.auth` as one kind or a list, and `auth.apiKeys`.
@Suite struct AuthKindsConfigurationTests {
    static let hash = "sha256:" + String(repeating: "ab", count: 32)

    static func yaml(_ routerAuth: String, keys: String) -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    auth:
      apiKeys:
    \(keys)
    routers:
      r: { rule: "PathPrefix(`/r`)", service: s, auth: \(routerAuth) }
    services:
      s: { http: { url: "http://127.0.0.1:1/mcp" } }
    """ }

    @Test func kindsAndKeys() throws {
        let loader = ConfigurationLoader(environment: [:])
        let both = try loader.load(yaml: Self.yaml("[oauth, apiKey]", keys: "    ci: { hash: \"\(Self.hash)\", user: ci-bot }"))
        #expect(both.routers[0].auth == .oauth && both.routers[0].authMethods == [.oauth, .apiKey] && both.routers[0].acceptsOAuth)
        #expect(both.auth?.apiKeys == [APIKey(name: "ci", hash: Array(repeating: 0xAB, count: 32), user: "ci-bot")])
        let keysOnly = try loader.load(yaml: Self.yaml("apiKey", keys: ""))
        #expect(keysOnly.routers[0].authMethods == [.apiKey] && !keysOnly.routers[0].acceptsOAuth)
        let open = try loader.load(yaml: Self.yaml("none", keys: ""))
        #expect(open.routers[0].auth == .none && !open.routers[0].acceptsOAuth)
        // Keys reload live like the allow-list: they do not count as a change needing a restart.
        var changed = try #require(both.auth)
        changed.apiKeys = []
        #expect(changed.equalsIgnoringAllowList(try #require(both.auth)))
    }

    @Test func mistakes() {
        let yaml = Self.yaml("[none, apiKey]", keys: """
            bad: { hash: "mcpgw_the-key-itself", user: x }
            nouser: { hash: "\(Self.hash)" }
        """)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "k.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("routers.r.auth: auth: none cannot be combined with other kinds"), "\(text)")
            #expect(text.contains("auth.apiKeys.bad.hash: hash must be \"sha256:\" and 64 hex digits"), "\(text)")
            #expect(text.contains("auth.apiKeys.nouser: missing \"user\""), "\(text)")
        }
        #expect(throws: ConfigError.self) { try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("jwt", keys: "")) }
    }
}

@Suite struct MachineClientConfigurationTests {
    static func yaml(_ auth: String) -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    auth:
    \(auth)
    routers:
      r: { rule: "PathPrefix(`/r`)", service: s }
    services:
      s: { http: { url: "http://127.0.0.1:1/mcp" } }
    """ }

    @Test func clientsAndOverrides() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("""
          clients:
            ci-runner: { secretHash: "\(AuthKindsConfigurationTests.hash)", user: ci-bot }
          clientOverrides:
            - { clientID: "https://app.example/client.json", accessTokenTTL: 24h }
            - { clientID: ci-runner, accessTokenTTL: 2h }
        """))
        let auth = try #require(configuration.auth)
        #expect(auth.machineClients == [MachineClient(id: "ci-runner", secretHash: Array(repeating: 0xAB, count: 32), user: "ci-bot", scopes: [])])
        #expect(auth.accessTokenLifetime(for: "https://app.example/client.json") == .seconds(86400))
        #expect(auth.accessTokenLifetime(for: "ci-runner") == .seconds(7200))
        #expect(auth.accessTokenLifetime(for: "mcpgw-other") == auth.accessTokenTTL)
        // Keys and revocation marks must outlive the longest token.
        #expect(auth.longestAccessTokenTTL == .seconds(86400))
        // Machine clients reload live; overrides need a restart (signing keys follow them).
        var changed = auth
        changed.machineClients = []
        #expect(changed.equalsIgnoringAllowList(auth))
        changed.clientOverrides = []
        #expect(!changed.equalsIgnoringAllowList(auth))
    }

    @Test func mistakes() {
        let yaml = Self.yaml("""
          clients:
            plain: { secretHash: "the-secret-itself", user: x }
            wide: { secretHash: "\(AuthKindsConfigurationTests.hash)", user: x, scopes: [admin] }
          clientOverrides:
            - { accessTokenTTL: 1h }
            - { clientID: c, accessTokenTTL: 90d }
          signing: { rotationInterval: 12h }
        """)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "c.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("auth.clients.plain.secretHash: secretHash must be \"sha256:\""), "\(text)")
            #expect(text.contains("auth.clients.wide.scopes: unknown scope \"admin\""), "\(text)")
            #expect(text.contains("auth.clientOverrides[0]: missing \"clientID\""), "\(text)")
            #expect(text.contains("auth.clientOverrides[1].accessTokenTTL: accessTokenTTL must be between 1m and 30d"), "\(text)")
        }
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("""
              clientOverrides: [{ clientID: c, accessTokenTTL: 24h }]
              signing: { rotationInterval: 12h }
            """), file: "c.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("rotationInterval must be at least the longest access-token TTL"), "\(error.description)")
        }
    }
}

/// `auth.refreshReuseGrace`: 10 s unless written; 0 s to 60 s.
@Suite struct RefreshReuseGraceConfigurationTests {
    @Test func defaultWrittenAndZero() throws {
        let loader = ConfigurationLoader(environment: [:])
        #expect(try loader.load(yaml: MachineClientConfigurationTests.yaml("  accessTokenTTL: 1h")).auth?.refreshReuseGrace == .seconds(10))
        #expect(try loader.load(yaml: MachineClientConfigurationTests.yaml("  refreshReuseGrace: 2500ms")).auth?.refreshReuseGrace == .milliseconds(2500))
        let strict = try #require(try loader.load(yaml: MachineClientConfigurationTests.yaml("  refreshReuseGrace: 0s")).auth)
        #expect(strict.refreshReuseGrace == .zero)
        // Read at start-up, as the rest of `auth`.
        var changed = strict
        changed.refreshReuseGrace = .seconds(5)
        #expect(!changed.equalsIgnoringAllowList(strict))
    }

    @Test func tooLongOrNoDurationIsAnErrorAtItsPlace() {
        for (value, message) in [("61s", "refreshReuseGrace must be at most 60s"), ("soon", "expected a duration")] {
            do {
                _ = try ConfigurationLoader(environment: [:]).load(yaml: MachineClientConfigurationTests.yaml("  refreshReuseGrace: \(value)"), file: "c.yaml")
                Issue.record("\(value) was taken")
            } catch {
                #expect(error.description.contains("c.yaml:4:22: auth.refreshReuseGrace: \(message)"), "\(error.description)")
            }
        }
    }
}

@Suite struct ExternalIssuerConfigurationTests {
    static func yaml(_ issuers: String, routerAuth: String = "jwt") -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    auth:
      allow: { groups: ["/sre"] }
      jwt:
        issuers:
    \(issuers)
    routers:
      r:
        rule: "PathPrefix(`/r`)"
        service: s
        auth: \(routerAuth)
        policies:
          - groups: ["/ops"]
            allow: ["restart_*"]
    services:
      s: { http: { url: "http://127.0.0.1:1/mcp" } }
    """ }

    @Test func issuersAndGroups() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("""
              keycloak: { issuer: "https://sso.example/realms/acme", audience: mcp, userClaim: preferred_username, groupsClaim: groups }
              local: { issuer: "http://127.0.0.1:8180", jwksURL: "http://127.0.0.1:8180/certs", audience: mcp }
        """, routerAuth: "[oauth, jwt]"))
        let auth = try #require(configuration.auth)
        #expect(auth.jwtIssuers.map(\.name) == ["keycloak", "local"])
        #expect(auth.jwtIssuers[0].userClaim == "preferred_username" && auth.jwtIssuers[0].groupsClaim == "groups" && auth.jwtIssuers[0].jwksURL == nil)
        #expect(auth.jwtIssuers[1].userClaim == "sub" && auth.jwtIssuers[1].jwksURL == "http://127.0.0.1:8180/certs")
        #expect(auth.allow.groups == ["/sre"])
        #expect(configuration.routers[0].authMethods == [.oauth, .jwt])
        #expect(configuration.routers[0].callPolicy.policies[0].groups == ["/ops"])
        // Issuers reload live.
        var changed = auth
        changed.jwtIssuers = []
        #expect(changed.equalsIgnoringAllowList(auth))
    }

    @Test func mistakes() {
        let yaml = Self.yaml("""
              plain: { issuer: "http://sso.example/realms/acme", audience: mcp }
              noaudience: { issuer: "https://sso.example/realms/b" }
              twice: { issuer: "https://sso.example/realms/c", audience: mcp }
              again: { issuer: "https://sso.example/realms/c", audience: mcp }
        """)
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "j.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("auth.jwt.issuers.plain.issuer: the issuer must be an https URL"), "\(text)")
            #expect(text.contains("auth.jwt.issuers.noaudience: missing \"audience\""), "\(text)")
            #expect(text.contains("auth.jwt.issuers.again.issuer: issuer \"https://sso.example/realms/c\" is already configured as twice"), "\(text)")
        }
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml("      {}"), file: "j.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("router r takes auth: jwt, but no issuer is configured under auth.jwt.issuers"), "\(error.description)")
        }
    }
}

@Suite struct SSEServiceConfigurationTests {
    static func yaml(_ service: String) -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    routers:
      r: { rule: "PathPrefix(`/r`)", service: s, auth: none }
    services:
      s:
    \(service)
    """ }

    @Test func anSSEServiceIsBridgedLikeAChild() throws {
        let configuration = try ConfigurationLoader(environment: ["OLD_TOKEN": "t0ken"]).load(yaml: Self.yaml("""
            sse:
              url: "http://127.0.0.1:9200/sse"
              headers: { X-Team: platform }
              auth: { bearer: "env://OLD_TOKEN" }
              maxSessions: 7
              idleTimeout: 2m
        """))
        guard case .stdio(let service) = configuration.services["s"] else {
            Issue.record("an sse service is bridged like a stdio child")
            return
        }
        #expect(service.sse?.url == "http://127.0.0.1:9200/sse")
        #expect(service.sse?.headers.map(\.name) == ["X-Team"])
        #expect(service.sse?.credentials == .bearer("t0ken"))
        #expect(service.maxSessions == 7 && service.idleTimeout == .seconds(120))
    }

    @Test func mistakes() {
        for (service, expected) in [
            ("    sse: { headers: { X-A: b } }", "services.s.sse: missing \"url\""),
            ("    sse: { url: \"http://127.0.0.1:9200/sse\", command: x }", "unknown key \"command\""),
            ("    sse: { url: \"http://127.0.0.1:9200/sse\" }\n    stdio: { command: x }", "a service is one of"),
        ] {
            do {
                _ = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(service), file: "s.yaml")
                Issue.record("expected an error for \(service)")
            } catch {
                #expect(error.description.contains(expected), "\(error.description)")
            }
        }
    }
}
