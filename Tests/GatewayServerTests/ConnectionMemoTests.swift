@testable import GatewayServer
import Foundation
import AuthorizationServer
import GatewayAuth
import GatewayUpstream
import GatewayConfig
import GatewayRouting
import GatewayStdio
import GatewayStore
import HTTPTypes
import Logging
import Testing

/// What a connection's fast-path memos remember of its last request: by serial numbers, not weak
/// references (a weak reference puts the route's reference count in its side table, the slow
/// path for every retain). A route or configuration made by a reload must never match, even one
/// built from the same text.
@Suite struct ConnectionMemoTests {
    private static let yaml = """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    routers:
      time: { rule: "PathPrefix(`/time`)", service: time, auth: none }
    services:
      time: { stdio: { command: "true" } }
    """

    /// A configuration as a reload makes it (nothing is spawned: stdio children start with a session).
    private func runtime() throws -> RuntimeConfiguration {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml)
        return RuntimeConfiguration(
            configuration: configuration, generation: 1, clients: UpstreamClients(), stdio: StdioRegistry(logger: Logger(label: "test")), store: MemoryStore()
        )
    }

    private func route(of runtime: RuntimeConfiguration) throws -> CompiledRoute {
        try #require(runtime.routeTable(entryPoint: "web")?.entries.first?.target)
    }

    @Test func serialsAreNeverShared() throws {
        let (first, second) = (try runtime(), try runtime())
        #expect(first.serial != second.serial)
        #expect(try route(of: first).serial != route(of: second).serial)
    }

    @Test func aRouteIsRememberedUnderItsOwnConfigurationOnly() throws {
        let current = try runtime()
        let head = HTTPRequest(method: .post, scheme: "http", authority: "localhost:8080", path: "/time/mcp")
        let memo = RouteMemo(runtime: current, head: head, route: try route(of: current), host: "localhost")
        let remembered = try #require(memo.route(of: head, runtime: current))
        #expect(remembered.0 === (try route(of: current)))
        #expect(remembered.1 == "localhost")
        // A reload: the same text, a new configuration.
        #expect(memo.route(of: head, runtime: try runtime()) == nil)
        // Another path or authority under the same configuration.
        #expect(memo.route(of: HTTPRequest(method: .post, scheme: "http", authority: "localhost:8080", path: "/time/mcp?x=1"), runtime: current) == nil)
        #expect(memo.route(of: HTTPRequest(method: .post, scheme: "http", authority: "127.0.0.1:8080", path: "/time/mcp"), runtime: current) == nil)
        #expect(RouteMemo().route(of: head, runtime: current) == nil)
    }

    @Test func aCallerIsRememberedForItsTokenOnItsRouteOnly() throws {
        let current = try runtime()
        let claims = AccessTokenClaims(
            iss: "http://localhost:8080", sub: "u1", aud: "http://localhost:8080/time/mcp", exp: 4_000_000_000, iat: 1, jti: "j", client_id: "c", scope: "mcp", login: "alice"
        )
        let caller = VerifiedCaller(claims: claims)
        let memo = TokenMemo(authorization: "Bearer one", route: try route(of: current), caller: caller, until: Date().addingTimeInterval(60))
        #expect(memo.caller(for: "Bearer one", route: try route(of: current)) === caller)
        #expect(memo.caller(for: "Bearer two", route: try route(of: current)) == nil)
        // The same router after a reload: checked again.
        #expect(memo.caller(for: "Bearer one", route: try route(of: try runtime())) == nil)
        let expired = TokenMemo(authorization: "Bearer one", route: try route(of: current), caller: caller, until: Date().addingTimeInterval(-1))
        #expect(expired.caller(for: "Bearer one", route: try route(of: current)) == nil)
        #expect(TokenMemo().caller(for: "Bearer one", route: try route(of: current)) == nil)
    }
}
