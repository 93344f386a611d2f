import Foundation
import GatewayTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// A stdio service in process: a real child (`FakeChild`, a few lines of Python) behind two
/// routers, driven in both eras.
@Suite struct StdioRouteTests {
    static func yaml(script: String) -> String { """
    entryPoints:
      web:
        address: "127.0.0.1:8080"
        allowedHosts: ["localhost"]
    publicURL: "http://localhost:8080"
    routers:
      one:
        rule: "PathPrefix(`/one`)"
        service: kid
        auth: none
      two:
        rule: "PathPrefix(`/two`)"
        service: kid
        auth: none
    services:
      kid:
        stdio:
          command: python3
          args: ["\(script)"]
    """ }

    static let sessionID = HTTPField.Name("Mcp-Session-Id")!
    static let base: HTTPFields = [.contentType: "application/json", .accept: "application/json, text/event-stream"]

    static func call(_ id: Int, tool: String, text: String = "") -> ByteBuffer {
        ByteBuffer(string: #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/call","params":{"name":"\#(tool)","arguments":{"text":"\#(text)"}}}"#)
    }

    static func text(_ response: TestResponse) throws -> String? {
        let result = try TestGateway.json(response)["result"] as? [String: Any]
        return ((result?["content"] as? [[String: Any]])?.first)?["text"] as? String
    }

    @Test func aSessionIsServedByItsChildThroughItsOwnRouterOnly() async throws {
        let script = try FakeChild.write()
        defer { try? FileManager.default.removeItem(atPath: script) }
        try await TestGateway.run(yaml: Self.yaml(script: script)) { client in
            let initialize = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
            let session = try await client.execute(uri: "/one/mcp", method: .post, headers: Self.base, body: initialize) { response in
                #expect(response.status == .ok)
                return try #require(response.headers[Self.sessionID])
            }
            #expect(session.count == 32)  // minted by the gateway, not the child's
            var inSession = Self.base
            inSession[Self.sessionID] = session
            inSession[HTTPField.Name("MCP-Protocol-Version")!] = "2025-11-25"
            try await client.execute(uri: "/one/mcp", method: .post, headers: inSession, body: Self.call(2, tool: "echo", text: "through the child")) { response in
                #expect(response.status == .ok)
                let text = try Self.text(response)
                #expect(text == "through the child")
            }
            // The same id through another router is somebody else's: not found, the child not asked.
            try await client.execute(uri: "/two/mcp", method: .post, headers: inSession, body: Self.call(3, tool: "echo", text: "stolen")) { response in
                #expect(response.status == .notFound)
            }
            // A made-up id is not found either.
            var forged = inSession
            forged[Self.sessionID] = String(repeating: "0", count: 32)
            try await client.execute(uri: "/one/mcp", method: .post, headers: forged, body: Self.call(4, tool: "echo")) { response in
                #expect(response.status == .notFound)
            }
            // DELETE ends the session; its id is then unknown.
            try await client.execute(uri: "/one/mcp", method: .delete, headers: inSession) { response in
                #expect(response.status.code < 300)
            }
            try await client.execute(uri: "/one/mcp", method: .post, headers: inSession, body: Self.call(5, tool: "echo")) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test func aModernRequestIsTranslatedForASessionBasedChild() async throws {
        let script = try FakeChild.write()
        defer { try? FileManager.default.removeItem(atPath: script) }
        try await TestGateway.run(yaml: Self.yaml(script: script)) { client in
            var headers = Self.base
            headers[HTTPField.Name("MCP-Protocol-Version")!] = "2026-07-28"
            headers[HTTPField.Name("Mcp-Method")!] = "tools/call"
            headers[HTTPField.Name("Mcp-Name")!] = "echo"
            let meta = #""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}"#
            let body = ByteBuffer(string: #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"stateless"},\#(meta)}}"#)
            try await client.execute(uri: "/one/mcp", method: .post, headers: headers, body: body) { response in
                #expect(response.status == .ok)
                #expect(response.headers[Self.sessionID] == nil)  // 2026-07-28 has no sessions
                let object = try TestGateway.json(response)
                #expect(object["id"] as? Int == 7)
                let result = try #require(object["result"] as? [String: Any])
                // The child answered as a 2025 server; the client reads a 2026-07-28 result.
                #expect(result["resultType"] as? String == "complete")
                #expect(((result["content"] as? [[String: Any]])?.first)?["text"] as? String == "stateless")
            }
            // The next request reuses the pooled child (pool.max 1): the same process answers.
            headers[HTTPField.Name("Mcp-Name")!] = "pid"
            let pidBody = ByteBuffer(string: #"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"pid","arguments":{},\#(meta)}}"#)
            var pids: [String] = []
            for _ in 0..<2 {
                let pid = try await client.execute(uri: "/one/mcp", method: .post, headers: headers, body: pidBody) { response in
                    #expect(response.status == .ok)
                    return try Self.text(response)
                }
                pids.append(try #require(pid))
            }
            #expect(pids[0] == pids[1])
        }
    }
}
