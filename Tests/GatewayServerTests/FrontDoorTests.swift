import NIOFoundationEssentialsCompat
import GatewayTesting
import GatewayConfig
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import Foundation

/// The front door in process: routing, path normalization, Host and Origin checks, session
/// ownership and forward auth, with a MemoryStore and no upstream process.
@Suite struct FrontDoorTests {
    /// The test clients always send `Host: localhost`: allowed here unless a test says otherwise.
    static func yaml(allowedHosts: String = #"["localhost"]"#) -> String { """
    entryPoints:
      web:
        address: "127.0.0.1:8080"
        allowedHosts: \(allowedHosts)
    publicURL: "https://gw.example.com"
    routers:
      pub:
        rule: "PathPrefix(`/pub`)"
        service: echo
        auth: none
      alpha:
        rule: "PathPrefix(`/alpha`)"
        service: echo
      kid:
        rule: "PathPrefix(`/kid`)"
        service: child
        auth: none
    services:
      child:
        stdio:
          command: "/bin/cat"
      echo:
        http:
          url: "http://127.0.0.1:9/mcp"
          connectTimeout: "1s"
    """ }

    func withGateway(allowedHosts: String = #"["localhost"]"#, _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await TestGateway.run(yaml: Self.yaml(allowedHosts: allowedHosts), test)
    }

    static let initialize = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)

    func json(_ response: TestResponse) throws -> [String: Any] {
        try TestGateway.json(response)
    }

    @Test func healthAndUnroutedPaths() async throws {
        try await withGateway { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/nowhere/mcp", method: .post, body: Self.initialize) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test func jsonBodiesKeepSlashesAsTheyAre() async throws {
        try await withGateway { client in
            try await client.execute(uri: "/.well-known/oauth-authorization-server", method: .get) { response in
                let text = String(buffer: response.body)
                #expect(text.contains(#""issuer":"https://gw.example.com""#), "\(text)")
                #expect(!text.contains(#"\/"#), "\(text)")
            }
        }
    }

    @Test(arguments: ["/pub/../alpha/mcp", "/pub/%2e%2e/alpha/mcp", "/pub/..%2Falpha/mcp", "/../alpha/mcp", "/pub%5Cmcp"])
    func pathsThatReadTwoWaysAreRefused(_ path: String) async throws {
        try await withGateway { client in
            try await client.execute(uri: path, method: .post, body: Self.initialize) { response in
                #expect(response.status == .badRequest, "\(path)")
                let body = try json(response)
                #expect(body["error"] as? String == "ambiguous_path")
            }
            let verify: HTTPFields = [HTTPField.Name("X-Forwarded-Host")!: "gw.example.com", HTTPField.Name("X-Forwarded-Uri")!: path]
            try await client.execute(uri: "/verify", method: .get, headers: verify) { response in
                #expect(response.status != .ok, "\(path)")
            }
        }
    }

    @Test func foreignHostsAndOriginsAreRefused() async throws {
        // `localhost` is not this gateway's name here (its public URL is gw.example.com).
        try await withGateway(allowedHosts: #"["mcp.allowed.example"]"#) { client in
            try await client.execute(uri: "/pub/mcp", method: .post, body: Self.initialize) { response in
                #expect(response.status == .misdirectedRequest)
            }
        }
        try await withGateway { client in
            try await client.execute(uri: "/pub/mcp", method: .post, headers: [.origin: "http://rebind.attacker.example:8080"], body: Self.initialize) { response in
                #expect(response.status == .forbidden)
            }
        }
    }

    @Test func aSessionIdTheGatewayNeverBoundIsNotFound() async throws {
        try await withGateway { client in
            var headers: HTTPFields = [.contentType: "application/json"]
            headers[HTTPField.Name("Mcp-Session-Id")!] = "made-up"
            for method in [HTTPRequest.Method.post, .get, .delete] {
                try await client.execute(uri: "/pub/mcp", method: method, headers: headers, body: method == .post ? Self.initialize : nil) { response in
                    #expect(response.status == .notFound, "\(method)")
                }
            }
        }
    }

    @Test func duplicateMembersAreRefusedBeforeAnyUpstream() async throws {
        try await withGateway { client in
            let body = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#)
            try await client.execute(uri: "/pub/mcp", method: .post, body: body) { response in
                #expect(response.status == .badRequest)
                let body = try json(response)
                let error = try #require(body["error"] as? [String: Any])
                #expect(error["code"] as? Int == -32700)
            }
        }
    }

    @Test func errorsTakeTheFormOfWhereTheyHappen() async throws {
        try await withGateway { client in
            // Before a router matched: plain JSON.
            try await client.execute(uri: "/nowhere/mcp", method: .post, body: Self.initialize) { response in
                let body = try json(response)
                #expect(body["error"] as? String == "no_route")
                #expect(body["jsonrpc"] == nil)
            }
            // At an MCP endpoint: a JSON-RPC error object.
            try await client.execute(uri: "/pub/mcp", method: .put, body: Self.initialize) { response in
                #expect(response.status == .methodNotAllowed)
                #expect(response.headers[.allow] == "GET, POST, DELETE")
                let body = try json(response)
                #expect(body["jsonrpc"] as? String == "2.0")
                let error = try #require(body["error"] as? [String: Any])
                #expect((error["data"] as? [String: Any])?["reason"] as? String == "method_not_allowed")
            }
            // A protected endpoint without a token: the OAuth form with its challenge.
            try await client.execute(uri: "/alpha/mcp", method: .post, body: Self.initialize) { response in
                #expect(response.status == .unauthorized)
                let challenge = try #require(response.headers[.wwwAuthenticate])
                #expect(challenge.contains("resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/alpha/mcp\""))
                let body = try json(response)
                #expect(body["error"] as? String == "invalid_request")
            }
        }
    }

    @Test func aModernRequestBreakingItsEraIsAnsweredForItsID() async throws {
        try await withGateway { client in
            var headers: HTTPFields = [.contentType: "application/json"]
            headers[HTTPField.Name("MCP-Protocol-Version")!] = "2026-07-28"
            headers[HTTPField.Name("Mcp-Method")!] = "tools/list"
            // The body says another method than the header: a header mismatch, for id 42.
            let body = ByteBuffer(string: #"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#)
            // A stdio route: the gateway itself speaks 2026-07-28 there (no child is started for a
            // request it refuses).
            try await client.execute(uri: "/kid/mcp", method: .post, headers: headers, body: body) { response in
                #expect(response.status == .badRequest)
                let object = try json(response)
                #expect(object["id"] as? Int == 42)
                #expect((object["error"] as? [String: Any])?["code"] as? Int == -32020)
            }
            try await client.execute(uri: "/kid/mcp", method: .get, headers: headers) { response in
                #expect(response.status == .methodNotAllowed)
                #expect(response.headers[.allow] == "POST")
            }
        }
    }
}
