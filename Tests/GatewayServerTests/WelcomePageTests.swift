import Foundation
import GatewayTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// `GET /` on the gateway's own host lists its MCP URLs (HTML, or JSON when asked); other hosts'
/// `/` is theirs. The test client sends `Host: localhost`.
@Suite struct WelcomePageTests {
    static func yaml(publicURL: String) -> String { """
    entryPoints:
      web:
        address: "127.0.0.1:8080"
        allowedHosts: ["localhost"]
    publicURL: "\(publicURL)"
    routers:
      open:
        rule: "PathPrefix(`/open`)"
        service: echo
        auth: none
      "we<ird>":
        rule: "PathPrefix(`/weird`)"
        service: echo
    services:
      echo:
        http:
          url: "http://127.0.0.1:9/mcp"
    """ }

    @Test func theGatewaysOwnHostListsItsMCPURLs() async throws {
        try await TestGateway.run(yaml: Self.yaml(publicURL: "http://localhost:8080")) { client in
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
                let page = String(buffer: response.body)
                #expect(page.contains("http://localhost:8080/open/mcp") && page.contains("public"))
                #expect(page.contains("http://localhost:8080/weird/mcp") && page.contains("sign-in required"))
                // Names from gateway.yaml are escaped, never markup.
                #expect(page.contains("we&lt;ird&gt;") && !page.contains("we<ird>"))
            }
            try await client.execute(uri: "/", method: .get, headers: [.accept: "application/json"]) { response in
                let servers = try #require(try TestGateway.json(response)["mcpServers"] as? [[String: Any]])
                #expect(servers.map { $0["url"] as? String } == ["http://localhost:8080/open/mcp", "http://localhost:8080/weird/mcp"])
                #expect(servers.map { $0["signIn"] as? Bool } == [false, true])
            }
        }
    }

    @Test func anotherHostsRootIsNotTheGatewaysPage() async throws {
        try await TestGateway.run(yaml: Self.yaml(publicURL: "https://gw.example.com")) { client in
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }
}
