import NIOFoundationEssentialsCompat
import GatewayTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import Foundation

/// The HTTP relay in process: a Hummingbird upstream on a free port that hands out a session and
/// echoes the headers it received, behind the gateway with a MemoryStore.
@Suite struct UpstreamRelayTests {
    static func yaml(upstreamPort: Int) -> String { """
    entryPoints:
      web:
        address: "127.0.0.1:8080"
        allowedHosts: ["localhost"]
    publicURL: "https://gw.example.com"
    routers:
      one:
        rule: "PathPrefix(`/one`)"
        service: up
        auth: none
      two:
        rule: "PathPrefix(`/two`)"
        service: up
        auth: none
    services:
      up:
        http:
          url: "http://127.0.0.1:\(upstreamPort)/mcp"
    """ }

    static let initialize = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)

    @Test func relaysBindsTheUpstreamSessionAndSetsForwardingHeaders() async throws {
        try await EchoUpstream.application().test(.live) { upstreamClient in
            let port = try #require(upstreamClient.port)
            try await TestGateway.run(yaml: Self.yaml(upstreamPort: port)) { client in
                var headers: HTTPFields = [.contentType: "application/json", .accept: "application/json, text/event-stream"]
                // Forged identity and forwarding headers never reach the upstream as sent.
                headers[HTTPField.Name("X-Forwarded-User")!] = "admin"
                headers[HTTPField.Name("X-Forwarded-Proto")!] = "gopher"
                headers[HTTPField.Name("X-Real-IP")!] = "10.9.9.9"
                try await client.execute(uri: "/one/mcp", method: .post, headers: headers, body: Self.initialize) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[HTTPField.Name("Mcp-Session-Id")!] == "up-1")
                    let seen = try EchoUpstream.seenHeaders(response)
                    // (The echo works: the client's own headers arrive.)
                    #expect(seen["content-type"] == "application/json")
                    #expect(seen["x-forwarded-user"] == nil)
                    #expect(seen["x-real-ip"] == nil)
                    // The public URL is https: so is the forwarded scheme, whatever the client said.
                    #expect(seen["x-forwarded-proto"] == "https")
                    #expect(seen["x-forwarded-host"] == "localhost")
                }
                // The session the upstream created belongs to router `one`: through `two` it is
                // not found, and the upstream never sees that request.
                var session = headers
                session[HTTPField.Name("Mcp-Session-Id")!] = "up-1"
                let ping = ByteBuffer(string: #"{"jsonrpc":"2.0","id":2,"method":"ping"}"#)
                try await client.execute(uri: "/two/mcp", method: .post, headers: session, body: ping) { response in
                    #expect(response.status == .notFound)
                }
                try await client.execute(uri: "/one/mcp", method: .post, headers: session, body: ping) { response in
                    #expect(response.status == .ok)
                }
            }
        }
    }
}
