import GatewayUpstream
import MCPTransport
import NIOCore
import HTTPTypes
import Testing
@testable import GatewayServer

/// The fast relay's pure parts: where it sends a request, which paths it leaves to the front
/// door, and the error it answers with (the full pipeline's).
@Suite struct FastRelayPiecesTests {
    @Test func answersMadeOnTheRelayAreDatedInIMFFixdate() {
        #expect(HTTPDate.format(secondsSince1970: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(secondsSince1970: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(secondsSince1970: 1_796_473_326) == "Sat, 05 Dec 2026 12:22:06 GMT")
        #expect(HTTPDate.now().hasSuffix(" GMT") && HTTPDate.now().count == 29)
    }

    @Test func relayTargetsAreReadFromPlainHTTPURLsOnly() throws {
        let target = try #require(RelayTarget(url: "http://127.0.0.1:8080/mcp?tenant=a"))
        #expect(target.host == "127.0.0.1" && target.port == 8080)
        #expect(target.hostHeader == "127.0.0.1:8080")
        #expect(target.path == "/mcp?tenant=a")
        #expect(target.requestTarget(query: "x=1") == "/mcp?tenant=a&x=1")
        #expect(target.requestTarget(query: nil) == "/mcp?tenant=a")
        let v6 = try #require(RelayTarget(url: "http://[::1]/"))
        #expect(v6.host == "::1" && v6.port == 80 && v6.hostHeader == "[::1]" && v6.path == "/")
        #expect(RelayTarget(url: "http://upstream.internal")?.path == "/")
        #expect(RelayTarget(url: "http://upstream.internal/a%20b")?.requestTarget(query: "q=%2F") == "/a%20b?q=%2F")
        // TLS, credentials in the URL and other schemes take the full pipeline's client.
        #expect(RelayTarget(url: "https://example.com/mcp") == nil)
        #expect(RelayTarget(url: "http://user:pw@example.com/mcp") == nil)
        #expect(RelayTarget(url: "unix:///run/mcp.sock") == nil)
        #expect(RelayTarget(url: "not a url") == nil)
    }

    @Test func everyPathTheFrontDoorServesIsLeftToIt() {
        let served = [
            "/", "/healthz", "/readyz", "/verify", "/jwks.json", "/authorize", "/authorize/consent", "/token", "/revoke", "/introspect",
            "/register", "/register/mcpgw-abc", "/oauth/github/callback", "/admin", "/admin/sessions/end", "/connections",
            "/connections/disconnect", "/connect/notes", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration/x",
            "/.well-known/oauth-protected-resource/time/mcp", "/time/mcp/.well-known/oauth-protected-resource",
            "/.well-known/mcp-gateway-client.json",
        ]
        for path in served {
            #expect(FrontDoor.mayAnswer(path: path), "\(path)")
        }
        for path in ["/time/mcp", "/mcp", "/notes/mcp/", "/tokens/mcp", "/administration/mcp"] {
            #expect(!FrontDoor.mayAnswer(path: path), "\(path)")
        }
    }

    @Test func upstreamFailuresAnswerAsTheFullPipelineDoes() {
        let refused = GatewayError.upstream(UpstreamError(.unreachable, service: "notes", detail: "connection refused"))
        let answer = refused.jsonRPCAnswer(rawID: nil)
        #expect(answer.status.code == 502)
        let text = String(buffer: answer.body)
        #expect(text.contains(#""reason":"upstream_unreachable""#) && text.contains(#""service":"notes""#))
        #expect(answer.headers[.contentType] == "application/json" && answer.headers[.cacheControl] == "no-store")
        let timedOut = GatewayError.upstream(UpstreamError(.timeout, service: "notes", detail: "no response"))
        #expect(timedOut.jsonRPCAnswer(rawID: nil).status.code == 504)
    }
}
