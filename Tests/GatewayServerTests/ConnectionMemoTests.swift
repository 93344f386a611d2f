@testable import GatewayServer
import Foundation
import AuthorizationServer
import GatewayAuth
import GatewayUpstream
import GatewayConfig
import GatewayRouting
import GatewayStdio
import GatewayStore
import GatewayAudit
import MCPMessages
import NIOCore
import Synchronization
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

    /// The audit line's fields about what was asked and who asked are encoded once per connection
    /// while they stay the same: any one of them changing must show in the next line (another
    /// tool, version, session, caller, address, route or trace), and a session is never named.
    @Test func theAuditLinesMemoNeverLendsOneRequestsFieldsToAnother() throws {
        final class Lines: AuditSink, Sendable {
            let lines = Mutex<[[UInt8]]>([])
            func record(_ event: AuditEvent) { recordLine { event.append(to: &$0) } }
            func recordLine(_ encode: (inout AuditLineWriter) -> Void) {
                let bytes = AuditLineWriter.bytes(encode)
                lines.withLock { $0.append(bytes) }
            }
            func requests() -> [[String: Any]] {
                lines.withLock { $0 }
                    .map { bytes in (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? ["unparsable": String(decoding: bytes, as: UTF8.self)] }
                    .filter { $0["event"] as? String == "mcp.request" }
            }
        }
        let sink = Lines()
        let audit = RequestAudit(sink: sink, arguments: .none, redactKeys: [])
        let (first, reloaded) = (try route(of: try runtime()), try route(of: try runtime()))
        func caller(_ login: String) -> VerifiedCaller {
            VerifiedCaller(claims: AccessTokenClaims(
                iss: "http://localhost:8080", sub: "sub-\(login)", aud: "http://localhost:8080/time/mcp", exp: 4_000_000_000, iat: 1, jti: "j", client_id: "client-\(login)",
                scope: "mcp", login: login
            ))
        }
        func call(tool: String, version: String = "2026-07-28", session: String? = nil) -> MCPCall {
            MCPCall(protocolVersion: version, sessionID: session, body: ByteBuffer(string: #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"\#(tool)"}}"#))
        }
        let (alice, bob) = (caller("alice"), caller("bob"))
        let requests: [(route: CompiledRoute, caller: VerifiedCaller, call: MCPCall, ip: String, trace: String?)] = [
            (first, alice, call(tool: "echo"), "10.0.0.1", nil),
            (first, alice, call(tool: "echo"), "10.0.0.1", nil),
            (first, alice, call(tool: "delete"), "10.0.0.1", nil),
            (first, alice, call(tool: "delete", version: "2025-06-18", session: "session-one"), "10.0.0.1", nil),
            (first, alice, call(tool: "delete", version: "2025-06-18", session: "session-two"), "10.0.0.1", nil),
            (first, bob, call(tool: "delete", version: "2025-06-18", session: "session-two"), "10.0.0.1", nil),
            (first, bob, call(tool: "delete", version: "2025-06-18", session: "session-two"), "10.0.0.2", nil),
            (first, bob, call(tool: "delete", version: "2025-06-18", session: "session-two"), "10.0.0.2", "4bf92f3577b34da6a3ce929d0e0e4736"),
            (first, bob, call(tool: "delete", version: "2025-06-18", session: "session-two"), "10.0.0.2", nil),
        ]
        var memo = ObservationMemo()
        for request in requests + [(reloaded, alice, call(tool: "echo"), "10.0.0.1", nil)] {
            let sent = RequestAudit.Sent(method: "POST", status: .ok, bytesOut: 10, errorCode: nil, createdSession: nil, clientIP: request.ip, elapsedNanoseconds: 1_000_000)
            audit.record(route: request.route, caller: request.caller, call: request.call, traceID: request.trace, sent: sent, memo: &memo)
        }
        let lines = sink.requests()
        try #require(lines.count == requests.count + 1)
        for (line, request) in zip(lines, requests) {
            #expect(line["tool"] as? String == request.call.target)
            #expect(line["protocol_version"] as? String == request.call.protocolVersion)
            #expect(line["user"] as? String == request.caller.claims.login)
            #expect(line["subject"] as? String == request.caller.claims.sub)
            #expect(line["client_id"] as? String == request.caller.claims.client_id)
            #expect(line["ip"] as? String == request.ip)
            #expect(line["trace_id"] as? String == request.trace)
            #expect(line["router"] as? String == "time")
            #expect((line["session"] as? String) == request.call.sessionID.map { String(ClientRegistry.hash($0).prefix(16)) })
            #expect(!line.values.contains { "\($0)".contains("session-") })
        }
        #expect(lines[3]["session"] as? String != lines[4]["session"] as? String)
        #expect(lines[0]["session"] == nil)
        #expect(lines.last?["user"] as? String == "alice" && lines.last?["router"] as? String == "time")
    }
}
