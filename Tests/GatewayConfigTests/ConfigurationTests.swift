import Foundation
import GatewayConfig
import Testing

/// The example from the gateway's specification, verbatim.
let specExample = """
entryPoints:
  web:
    address: "127.0.0.1:8080"
publicURL: "http://127.0.0.1:8080"      # how clients reach the gateway; used in metadata and resource URLs
store:
  redis:
    url: "redis://127.0.0.1:6379/0"
auth:
  github:
    clientID: "${GITHUB_CLIENT_ID}"
    clientSecret: "${GITHUB_CLIENT_SECRET}"
    webURL: "https://github.com"          # GitHub Enterprise: https://ghe.example.com
    apiURL: "https://api.github.com"      # GitHub Enterprise: https://ghe.example.com/api/v3
  allow:
    users: ["octocat"]
    orgs: ["acme"]
    teams: ["acme/platform"]
  accessTokenTTL: "1h"
  refreshTokenTTL: "720h"
routers:
  time:
    rule: "PathPrefix(`/time`)"
    service: time
  notes:
    rule: "Host(`notes.example.com`)"
    service: notes
    allow:
      users: ["octocat"]
  status:
    rule: "PathPrefix(`/status`)"
    service: status
    auth: none
services:
  time:
    stdio:
      command: "mcp-server-time"
      args: ["--local-timezone=UTC"]
      env: {}
      maxSessions: 100
      idleTimeout: "10m"
  notes:
    http:
      url: "http://127.0.0.1:9100/mcp"
      headers:
        X-Api-Key: "${NOTES_API_KEY}"
  status:
    http:
      url: "http://127.0.0.1:9200/mcp"
"""

let exampleEnvironment = ["GITHUB_CLIENT_ID": "id-123", "GITHUB_CLIENT_SECRET": "secret-456", "NOTES_API_KEY": "k-789"]

@Suite struct ExampleConfigurationTests {
    @Test func specExampleLoadsWithEveryValue() throws {
        let config = try ConfigurationLoader(environment: exampleEnvironment).load(yaml: specExample)
        #expect(config.entryPoints == [EntryPoint(name: "web", host: "127.0.0.1", port: 8080, allowedOrigins: [])])
        #expect(config.publicURL.origin == "http://127.0.0.1:8080")
        #expect(config.store?.redisURL == "redis://127.0.0.1:6379/0")
        #expect(config.auth?.github?.clientID == "id-123")
        #expect(config.auth?.github?.clientSecret == "secret-456")
        #expect(config.auth?.allow == AllowList(users: ["octocat"], orgs: ["acme"], teams: ["acme/platform"]))
        #expect(config.auth?.accessTokenTTL == .seconds(3600))
        #expect(config.auth?.refreshTokenTTL == .seconds(720 * 3600))
        #expect(config.routers.map(\.name) == ["time", "notes", "status"])
        let byName = Dictionary(uniqueKeysWithValues: config.routers.map { ($0.name, $0) })
        #expect(byName["time"]?.mcpPath == "/time/mcp")
        #expect(byName["notes"]?.mcpPath == "/mcp")
        #expect(byName["notes"]?.allow?.users == ["octocat"])
        #expect(byName["status"]?.auth == RouterAuth.none)
        #expect(byName["time"]?.auth == .oauth)
        #expect(byName["time"]?.priority == "PathPrefix(`/time`)".count)
        guard case .stdio(let time)? = config.services["time"] else {
            Issue.record("time is not a stdio service")
            return
        }
        #expect(time.command == "mcp-server-time")
        #expect(time.args == ["--local-timezone=UTC"])
        #expect(time.maxSessions == 100)
        #expect(time.idleTimeout == .seconds(600))
        #expect(time.shutdownGrace == .seconds(5))
        guard case .http(let notes)? = config.services["notes"] else {
            Issue.record("notes is not an http service")
            return
        }
        #expect(notes.url == "http://127.0.0.1:9100/mcp")
        #expect(notes.headers.map(\.name) == ["X-Api-Key"])
        #expect(notes.headers.map(\.value) == ["k-789"])
        #expect(notes.maxRequestBodyBytes == 4 * 1024 * 1024)
    }

    @Test func unsetVariableIsAnErrorNamingTheKeyAndPosition() {
        var environment = exampleEnvironment
        environment["NOTES_API_KEY"] = nil
        do {
            _ = try ConfigurationLoader(environment: environment).load(yaml: specExample, file: "gw.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.diagnostics.count == 1)
            #expect(error.description == "gw.yaml:45:20: services.notes.http.headers.X-Api-Key: environment variable NOTES_API_KEY is not set (write ${NOTES_API_KEY:-default} to give a default)")
        }
    }

    @Test func repositoryGatewayYamlIsValid() throws {
        let path = #filePath.replacingOccurrences(of: "Tests/GatewayConfigTests/ConfigurationTests.swift", with: "gateway.yaml")
        let config = try ConfigurationLoader(environment: ["NOTES_API_KEY": "x"]).load(path: path)
        #expect(config.routers.contains { $0.name == "status" && $0.auth == RouterAuth.none })
    }
}

@Suite struct ConfigurationErrorTests {
    /// A broken copy of the example: every problem must be reported at once, with its position.
    @Test func everyProblemIsListedWithLineAndColumn() {
        let broken = specExample
            .replacingOccurrences(of: "address: \"127.0.0.1:8080\"", with: "address: \"127.0.0.1:99999\"")
            .replacingOccurrences(of: "rule: \"PathPrefix(`/time`)\"", with: "rule: \"PathPrefix(`/time`) &&\"")
            .replacingOccurrences(of: "service: notes", with: "service: nots")
            .replacingOccurrences(of: "    auth: none", with: "    auth: none\n    prioritty: 3")
            .replacingOccurrences(of: "url: \"http://127.0.0.1:9200/mcp\"", with: "url: \"ftp://127.0.0.1:9200/mcp\"")
            .replacingOccurrences(of: "idleTimeout: \"10m\"", with: "idleTimeout: \"ten minutes\"")
        do {
            _ = try ConfigurationLoader(environment: exampleEnvironment).load(yaml: broken, file: "broken.yaml")
            Issue.record("expected errors")
        } catch {
            let lines = error.description.split(separator: "\n").map(String.init)
            #expect(lines == [
                "broken.yaml:3:14: entryPoints.web.address: invalid address \"127.0.0.1:99999\"; expected host:port with a port from 1 to 65535",
                "broken.yaml:22:34: routers.time.rule: invalid rule: the rule ends where a matcher was expected",
                "broken.yaml:26:14: routers.notes.service: service \"nots\" is not defined (defined: notes, status, time)",
                "broken.yaml:33:5: routers.status.prioritty: unknown key \"prioritty\"; did you mean \"priority\"?",
                "broken.yaml:41:20: services.time.stdio.idleTimeout: expected a duration such as \"90s\", \"10m\" or \"1h\", got \"ten minutes\"",
                "broken.yaml:49:12: services.status.http.url: \"ftp://127.0.0.1:9200/mcp\" is not an absolute http(s) URL",
            ])
        }
    }

    @Test func badRuleColumnPointsInsideTheRule() {
        let yaml = """
        entryPoints: { web: { address: ":8080" } }
        publicURL: "http://localhost:8080"
        routers:
          a:
            rule: "Host(`a.com`) && Hots(`b`)"
            service: s
        services:
          s: { http: { url: "http://127.0.0.1:1/mcp" } }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "c.yaml")
            Issue.record("expected an error")
        } catch {
            // The rule text starts at column 12 (after the quote); "Hots" is 17 characters in.
            #expect(error.diagnostics.first?.line == 5)
            #expect(error.diagnostics.first?.column == 29)
            #expect(error.diagnostics.first?.message.contains("unknown matcher \"Hots\"") == true)
        }
    }

    @Test func duplicateNamesAreReportedAtTheRepeatedOccurrence() {
        let yaml = """
        entryPoints: { web: { address: "127.0.0.1:8080" } }
        publicURL: "http://localhost:8080"
        routers:
          a:
            rule: "PathPrefix(`/a`)"
            service: s
          a:
            rule: "PathPrefix(`/b`)"
            service: s
        services:
          s: { http: { url: "http://127.0.0.1:1/mcp" } }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "d.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "d.yaml:7:3: duplicate key \"a\" (first defined at line 4); names must be unique")
        }
    }

    @Test func everyProblemIsListedEvenWithDuplicateKeys() {
        let yaml = """
        entryPoints: { web: { address: "127.0.0.1:8080" } }
        publicURL: "http://localhost:8080"
        routers:
          a:
            rule: "PathPrefix(`/a`)"
            service: s
            rule: "PathPrefix(`/z`)"
          b:
            rule: "PathPrefix(`/b`)"
            service: nowhere
          a:
            rule: "PathPrefix(`/c`)"
            service: s
        services:
          s: { http: { url: "http://127.0.0.1:1/mcp" } }
          s: { http: { url: "http://127.0.0.1:2/mcp" } }
          t: { http: { url: "http://127.0.0.1:3/mcp" } }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "d.yaml")
            Issue.record("expected errors")
        } catch {
            let lines = error.description.split(separator: "\n").map(String.init)
            #expect(lines.contains("d.yaml:7:5: duplicate key \"rule\" (first defined at line 5); names must be unique"), "\(lines)")
            #expect(lines.contains("d.yaml:11:3: duplicate key \"a\" (first defined at line 4); names must be unique"), "\(lines)")
            #expect(lines.contains("d.yaml:16:3: duplicate key \"s\" (first defined at line 15); names must be unique"), "\(lines)")
            // The defined services are named once each, whatever the file repeats.
            #expect(lines.contains { $0.contains("routers.b.service") && $0.hasSuffix("service \"nowhere\" is not defined (defined: s, t)") }, "\(lines)")
            #expect(!lines.contains { $0.contains("\u{2063}") }, "\(lines)")
            // Not the other routers' `rule` lines: only the mapping that repeats it.
            #expect(!lines.contains { $0.hasPrefix("d.yaml:9:") || $0.hasPrefix("d.yaml:12:") }, "\(lines)")
        }
    }

    @Test func yamlSyntaxErrorHasAPosition() {
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: "routers:\n  a: [\n", file: "e.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.diagnostics.count == 1)
            #expect(error.diagnostics[0].line >= 2)
            #expect(error.diagnostics[0].message.hasPrefix("invalid YAML"))
        }
    }

    @Test func missingSectionsAndServiceShapeProblems() {
        let yaml = """
        publicURL: "http://localhost:8080/base"
        routers:
          a:
            service: s
        services:
          s:
            http: { url: "http://127.0.0.1:1/mcp" }
            stdio: { command: "x" }
          t: {}
          u:
            stdio: { command: "x", spares: 5, maxSessions: 2 }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "f.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("f.yaml:1:1: missing \"entryPoints\""))
            #expect(text.contains("f.yaml:1:12: publicURL: must be an origin only"))
            #expect(text.contains("f.yaml:4:5: routers.a: missing \"rule\""))
            #expect(text.contains("f.yaml:7:5: services.s: a service is one of \"http\", \"stdio\", \"sse\" or \"group\", not http and stdio"))
            #expect(text.contains("f.yaml:9:6: services.t: missing \"http\""))
            #expect(text.contains("f.yaml:11:36: services.u.stdio.spares: spares (5) cannot exceed maxSessions (2)"))
        }
    }

    @Test func hostileHeaderConfigurationIsRejected() {
        let yaml = """
        entryPoints: { web: { address: "127.0.0.1:8080" } }
        publicURL: "http://localhost:8080"
        routers: { a: { rule: "PathPrefix(`/a`)", service: s } }
        services:
          s:
            http:
              url: "http://127.0.0.1:1/mcp"
              headers: { Transfer-Encoding: chunked, "Bad Name": x }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "g.yaml")
            Issue.record("expected errors")
        } catch {
            #expect(error.diagnostics.count == 2)
            #expect(error.description.contains("\"Transfer-Encoding\" cannot be set on upstream requests"))
            #expect(error.description.contains("\"Bad Name\" cannot be set on upstream requests"))
        }
    }
}

@Suite struct EnvironmentExpansionTests {
    let expander = EnvironmentExpander(environment: ["A": "alpha", "EMPTY": ""])

    @Test(arguments: [
        ("plain", "plain"),
        ("${A}", "alpha"),
        ("x-${A}-y", "x-alpha-y"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${A:-fallback}", "alpha"),
        ("${MISSING:-}", ""),
        ("cost: $$5", "cost: $5"),
        ("$A stays", "$A stays"),
    ])
    func expands(input: String, output: String) throws {
        #expect(try expander.expand(input) == output)
    }

    @Test func unsetWithoutDefaultFails() {
        #expect(throws: EnvironmentExpander.Failure.unset(name: "MISSING")) { try expander.expand("${MISSING}") }
    }

    @Test func malformedReferenceFails() {
        #expect(throws: EnvironmentExpander.Failure.self) { try expander.expand("${A") }
        #expect(throws: EnvironmentExpander.Failure.self) { try expander.expand("${A B}") }
    }
}

@Suite struct ValueSyntaxTests {
    @Test(arguments: [
        ("90s", Duration.seconds(90)), ("10m", .seconds(600)), ("1h", .seconds(3600)), ("720h", .seconds(720 * 3600)),
        ("1h30m", .seconds(5400)), ("500ms", .milliseconds(500)), ("2d", .seconds(172_800)), ("45", .seconds(45)),
        ("1.5s", .milliseconds(1500)),
    ])
    func durations(text: String, expected: Duration) {
        #expect(DurationSyntax.parse(text) == expected)
    }

    @Test(arguments: ["", "ten", "10x", "m10", "-5s"])
    func invalidDurations(text: String) {
        #expect(DurationSyntax.parse(text) == nil)
    }

    @Test(arguments: [("4MiB", 4_194_304), ("512KiB", 524_288), ("1MB", 1_000_000), ("2048", 2048)])
    func sizes(text: String, expected: Int) {
        #expect(ByteSizeSyntax.parse(text) == expected)
    }
}

@Suite struct LocalUsersTests {
    @Test func hashesAreRequiredNotPasswords() {
        let yaml = """
        entryPoints: { web: { address: "127.0.0.1:8080" } }
        publicURL: "http://localhost:8080"
        auth:
          local:
            users:
              alice: "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
              bob: "hunter2"
              "bad name": "$scrypt$ln=15,r=8,p=1$a$b"
        routers: { a: { rule: "PathPrefix(`/a`)", service: s, auth: none } }
        services: { s: { http: { url: "http://127.0.0.1:1/mcp" } } }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "u.yaml")
            Issue.record("expected errors")
        } catch {
            let lines = error.description.split(separator: "\n").map(String.init)
            #expect(lines.count == 2)
            #expect(lines[0].hasPrefix("u.yaml:7:12: auth.local.users.bob: expected a password hash"))
            #expect(lines[1].hasPrefix("u.yaml:8:7: auth.local.users.bad name: user names are"))
        }
    }
}

@Suite struct AuthSettingsTests {
    let base = """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    routers: { a: { rule: "PathPrefix(`/a`)", service: s } }
    """

    @Test func signingAndMetadataDocumentsAndPassIdentityLoad() throws {
        let yaml = base + """

        auth:
          signing: { algorithm: RS256, rotationInterval: "48h" }
          clientMetadata:
            allowPrivateAddresses: true
            pinned:
              "https://app.example/client.json": { client_name: App, redirect_uris: ["https://app.example/cb"] }
        services:
          s: { stdio: { command: "x", passIdentity: env } }
          t: { stdio: { command: "y", isolation: shared, pool: { min: 2, max: 4, idleTimeout: "2m" } } }
        """
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "a.yaml")
        guard case .stdio(let pooled) = configuration.services["t"] else { Issue.record("expected a stdio service"); return }
        #expect(pooled.isolation == .shared && pooled.pool == .init(min: 2, max: 4, idleTimeout: .seconds(120)))
        #expect(configuration.auth?.signing.algorithm == .rs256)
        #expect(configuration.auth?.signing.rotationInterval == .seconds(48 * 3600))
        #expect(configuration.auth?.clientMetadata.allowPrivateAddresses == true)
        #expect(configuration.auth?.clientMetadata.pinned["https://app.example/client.json"]?.redirectURIs == ["https://app.example/cb"])
        guard case .stdio(let stdio) = configuration.services["s"] else { Issue.record("expected a stdio service"); return }
        #expect(stdio.passIdentity)
    }

    @Test func aPublishedDocumentIsPinnedAsItIsAndClaudeIsPinnedByDefault() throws {
        let yaml = base + """

        auth:
          clientMetadata:
            pinned:
              "https://app.example/client.json":
                client_id: "https://app.example/client.json"
                client_name: "App"
                client_uri: "https://app.example"
                logo_uri: "https://app.example/logo.png"
                redirect_uris: ["https://app.example/cb"]
                grant_types: ["authorization_code", "refresh_token"]
                response_types: ["code"]
                token_endpoint_auth_method: "none"
                scope: "mcp"
        services:
          s: { stdio: { command: "x" } }
        """
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "a.yaml")
        let pinned = try #require(configuration.auth?.clientMetadata.pinned)
        let app = try #require(pinned["https://app.example/client.json"])
        #expect(app.redirectURIs == ["https://app.example/cb"] && app.clientName == "App")
        #expect(app.document["grant_types"] as? [String] == ["authorization_code", "refresh_token"])
        // Claude's document is known without being written down.
        #expect(pinned[ClientMetadataConfiguration.claudeClientID]?.redirectURIs.contains("https://claude.ai/api/mcp/auth_callback") == true)
        let bare = try ConfigurationLoader(environment: [:]).load(yaml: base + "\nservices:\n  s: { stdio: { command: \"x\" } }\n", file: "b.yaml")
        #expect(bare.auth == nil && ClientMetadataConfiguration.default.pinned[ClientMetadataConfiguration.claudeClientID] != nil)
    }

    @Test func unusableSettingsAreReportedWithPositions() {
        let yaml = base + """

        auth:
          accessTokenTTL: "2h"
          signing: { algorithm: HS256, rotationInterval: "1h" }
          clientMetadata:
            pinned:
              "http://app.example/client.json": { redirect_uris: ["https://app.example/cb"] }
              "https://app.example/secret.json": { redirect_uris: ["https://app.example/cb"], token_endpoint_auth_method: client_secret_basic }
        services:
          s: { stdio: { command: "x", passIdentity: env, spares: 2 } }
          t: { stdio: { command: "y", isolation: everyone, pool: { min: 1 } } }
          u: { stdio: { command: "y", isolation: shared, pool: { min: 3, max: 2 } } }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "a.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("auth.signing.algorithm: algorithm must be ES256"))
            #expect(text.contains("auth.signing.rotationInterval: rotationInterval must be at least accessTokenTTL"))
            #expect(text.contains("pinned documents are keyed by their client id"))
            #expect(text.contains("token_endpoint_auth_method must be none"))
            #expect(text.contains("services.s.stdio.spares: spares cannot be used with passIdentity: env"))
            #expect(text.contains("services.t.stdio.isolation: isolation must be \"user\""))
            #expect(text.contains("services.u.stdio.pool.min: pool.min (3) cannot exceed pool.max (2)"))
        }
    }
}
