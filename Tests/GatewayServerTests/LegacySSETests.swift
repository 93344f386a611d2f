@testable import GatewayServer
import GatewayConfig
import MCPMessages
import MCPTransport
import NIOCore
import Testing

/// The 2024-11-05 HTTP+SSE transport's pure parts: where its endpoints are, and how a posted body
/// becomes messages.
@Suite struct LegacySSETests {
    static func router(mcpPath: String, legacySSE: Bool = true) throws -> RouterConfiguration {
        let yaml = """
        entryPoints: { web: { address: "127.0.0.1:8080" } }
        publicURL: "http://localhost:8080"
        routers:
          r: { rule: "PathPrefix(`/time`)", service: s, auth: none, mcpPath: "\(mcpPath)", legacySSE: \(legacySSE) }
        services:
          s: { http: { url: "http://127.0.0.1:1/mcp" } }
        """
        return try ConfigurationLoader(environment: [:]).load(yaml: yaml).routers[0]
    }

    @Test func endpointsSitBesideTheMCPEndpoint() throws {
        let time = try Self.router(mcpPath: "/time/mcp")
        #expect(time.legacySSEPaths.stream == "/time/sse" && time.legacySSEPaths.messages == "/time/messages")
        #expect(LegacySSEEndpoint(path: "/time/sse", router: time) == .stream)
        #expect(LegacySSEEndpoint(path: "/time/messages/", router: time) == .messages)
        #expect(LegacySSEEndpoint(path: "/time/mcp", router: time) == nil)
        #expect(LegacySSEEndpoint(path: "/time/sse/x", router: time) == nil)
        let custom = try Self.router(mcpPath: "/time/api")
        #expect(custom.legacySSEPaths.stream == "/time/api/sse")
        let off = try Self.router(mcpPath: "/time/mcp", legacySSE: false)
        #expect(LegacySSEEndpoint(path: "/time/sse", router: off) == nil)
    }

    @Test func aBatchIsSplitIntoItsMessages() throws {
        let single = try LegacySSEClients.split(ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
        #expect(single.count == 1)
        let batch = try LegacySSEClients.split(ByteBuffer(string: #" [{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#))
        #expect(try batch.map { try JSONRPCMessage(parsing: $0).method } == ["ping", "notifications/initialized"])
        #expect(throws: GatewayError.self) { try LegacySSEClients.split(ByteBuffer(string: "[]")) }
        #expect(throws: GatewayError.self) { try LegacySSEClients.split(ByteBuffer(string: "[1, 2]")) }
    }
}
