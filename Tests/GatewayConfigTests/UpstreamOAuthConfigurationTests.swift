import Foundation
import GatewayConfig
import Testing

/// `services.<s>.http.oauth` and `store.encryptionKey` as the loader reads them.
@Suite struct UpstreamOAuthConfigurationTests {
    static let key = Data((0..<32).map { UInt8($0) }).base64EncodedString()

    static func yaml(oauth: String = "{ scopes: [read, write] }", store: String = #"{ encryptionKey: "env://KEY" }"#, routerAuth: String = "", extraService: String = "") -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    store: \(store)
    routers:
      r: { rule: "PathPrefix(`/r`)", service: linear\(routerAuth) }
    services:
      linear:
        http:
          url: "https://mcp.linear.example/mcp"
          oauth: \(oauth)\(extraService)
    """ }

    static func load(_ yaml: String, environment: [String: String] = ["KEY": key]) throws -> GatewayConfiguration {
        try ConfigurationLoader(environment: environment).load(yaml: yaml, file: "c.yaml")
    }

    static func errors(_ yaml: String, environment: [String: String] = ["KEY": key]) -> String {
        do {
            _ = try load(yaml, environment: environment)
            return ""
        } catch let error as ConfigError {
            return error.description
        } catch {
            return "\(error)"
        }
    }

    @Test func aServiceWithOAuthAndAKeyLoads() throws {
        let configuration = try Self.load(Self.yaml(oauth: #"{ clientID: "gw-client", clientSecret: "env://SECRET", scopes: [read, write], authorizationServer: "https://auth.linear.example/" }"#),
                                          environment: ["KEY": Self.key, "SECRET": "s3cret-value"])
        guard case .http(let service)? = configuration.services["linear"], let oauth = service.oauth else {
            Issue.record("no oauth settings")
            return
        }
        #expect(oauth.provider == .mcp && oauth.clientID == "gw-client" && oauth.clientSecret == "s3cret-value" && oauth.scopes == ["read", "write"])
        #expect(oauth.authorizationServer == "https://auth.linear.example")
        #expect(configuration.storeKeys?.current == Array(0..<32) && configuration.storeKeys?.previous == [])
        // Neither the client secret nor the key shows in a description.
        #expect(!"\(oauth)".contains("s3cret") && !"\(configuration)".contains("s3cret"))
        #expect(!"\(configuration.storeKeys!)".contains("31"))
        // An empty `${LINEAR_CLIENT_ID:-}`: automatic client identification.
        let automatic = try Self.load(Self.yaml(oauth: #"{ clientID: "${LINEAR_CLIENT_ID:-}" }"#))
        guard case .http(let plain)? = automatic.services["linear"] else { return }
        #expect(plain.oauth?.clientID == nil)
        // provider: github with extra scopes, and previous keys for rotation (URL-safe base64 too).
        let urlSafe = Self.key.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let github = try Self.load("""
        \(Self.yaml(oauth: "{ provider: github, scopes: [repo] }", store: #"{ encryptionKey: "env://KEY", previousEncryptionKeys: ["\#(urlSafe)"] }"#))
        auth:
          github: { clientID: c, clientSecret: s }
        """)
        #expect(github.storeKeys?.previous.count == 1)
        guard case .http(let githubService)? = github.services["linear"] else { return }
        #expect(githubService.oauth?.provider == .github && githubService.oauth?.scopes == ["repo"])
    }

    @Test func mistakesAreReportedWithTheirPosition() {
        // No key to seal users' tokens with.
        #expect(Self.errors(Self.yaml(store: "{}")).contains("c.yaml:10:14: services.linear.http.oauth: users' upstream tokens are stored encrypted: set store.encryptionKey"))
        // A key that is not 32 bytes, and one whose variable is unset.
        #expect(Self.errors(Self.yaml(), environment: ["KEY": "c2hvcnQ="]).contains("store.encryptionKey: the key must be 32 random bytes in base64"))
        #expect(Self.errors(Self.yaml(), environment: [:]).contains("store.encryptionKey: the environment variable KEY is not set"))
        // A router that does not know its user.
        #expect(Self.errors(Self.yaml(routerAuth: ", auth: none")).contains("router r has auth: none, but linear calls its upstream with each signed-in user's own token"))
        // Two sources of the upstream's credentials.
        #expect(Self.errors(Self.yaml(extraService: "\n      auth: { bearer: x }")).contains("oauth and auth both set the upstream's credentials"))
        #expect(Self.errors(Self.yaml(extraService: "\n      headers: { Authorization: x }")).contains("oauth sets Authorization itself"))
        // Settings that cannot work.
        #expect(Self.errors(Self.yaml(oauth: "{ provider: gitlab }")).contains("provider is mcp"))
        #expect(Self.errors(Self.yaml(oauth: "{ provider: github }")).contains("provider: github uses the gateway's GitHub sign-in: configure auth.github"))
        #expect(Self.errors(Self.yaml(oauth: #"{ clientSecret: "x" }"#)).contains("clientSecret belongs to a clientID"))
        #expect(Self.errors(Self.yaml(oauth: #"{ scopes: ["read write"] }"#)).contains("is not an OAuth scope token"))
        #expect(Self.errors(Self.yaml(oauth: "{ authorizationServer: ftp://x }")).contains("is not an absolute http(s) URL"))
        #expect(Self.errors(Self.yaml(oauth: "{ colour: blue }")).contains("services.linear.http.oauth"))
    }
}
