import GatewayUpstream
import HTTPTypes
import NIOHTTP1
import Testing

/// Which headers cross the gateway, each way: what an attacker would try to smuggle through (case
/// and underscore variants, names listed in `Connection` with odd spacing, forwarding headers of
/// their own) never reaches the other side, and everything end to end does, in order.
@Suite struct HeaderPolicyTests {
    private func upstream(_ fields: HTTPFields, removing: Set<String> = [], serviceHeaders: [(name: String, value: String)] = []) -> HTTPHeaders {
        HeaderPolicy.upstreamRequestHeaders(
            from: fields, removing: removing, removingCookies: ["mcpgw-", "__Host-mcpgw-"], clientAddress: "203.0.113.9",
            forwardedProto: "https", forwardedHost: "gw.example", serviceHeaders: serviceHeaders
        )
    }

    private func name(_ text: String) -> HTTPField.Name {
        HTTPField.Name(text)!  // test input: valid tokens only
    }

    @Test func upstreamRequestsCarryEndToEndHeadersOnlyThenTheGatewaysOwn() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: .accept, value: "application/json"))
        fields.append(HTTPField(name: .connection, value: " keep-alive ,\tX-Secret-Hop ,Upgrade"))
        fields.append(HTTPField(name: name("X-Secret-Hop"), value: "listed in Connection"))
        fields.append(HTTPField(name: name("x-secret-hop"), value: "lower case, still listed"))
        // A second Connection field, its member in another case with underscores: listed too.
        fields.append(HTTPField(name: .connection, value: "X_OTHER_HOP"))
        fields.append(HTTPField(name: name("x-other-hop"), value: "listed as X_OTHER_HOP"))
        fields.append(HTTPField(name: name("Keep-Alive"), value: "timeout=5"))
        fields.append(HTTPField(name: name("Transfer-Encoding"), value: "chunked"))
        fields.append(HTTPField(name: name("Proxy-Authorization"), value: "Basic c2VjcmV0"))
        fields.append(HTTPField(name: name("X-Forwarded-For"), value: "198.51.100.1"))
        fields.append(HTTPField(name: name("X_Forwarded_For"), value: "198.51.100.2"))
        fields.append(HTTPField(name: name("x_forwarded_user"), value: "admin"))
        fields.append(HTTPField(name: name("X-Real-IP"), value: "198.51.100.3"))
        fields.append(HTTPField(name: name("Forwarded"), value: "for=198.51.100.4"))
        fields.append(HTTPField(name: name("X_Custom_Thing"), value: "kept"))
        fields.append(HTTPField(name: .authorization, value: "Bearer gateway-token"))
        fields.append(HTTPField(name: .cookie, value: "theme=dark; mcpgw-session=s3cret; __Host-mcpgw-b=x; MCPGW-other=y"))
        fields.append(HTTPField(name: name("X-Service-Key"), value: "client copy"))
        fields.append(HTTPField(name: name("MCP-Protocol-Version"), value: "2026-07-28"))

        let headers = upstream(fields, removing: ["authorization"], serviceHeaders: [(name: "X-Service-Key", value: "configured")])
        let sent = headers.map { "\($0.name): \($0.value)" }
        #expect(sent == [
            "Accept: application/json",
            "X_Custom_Thing: kept",
            "Cookie: theme=dark",
            "MCP-Protocol-Version: 2026-07-28",
            "X-Forwarded-For: 203.0.113.9",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: gw.example",
            "X-Service-Key: configured",
        ])
    }

    @Test func aConfiguredHeaderReplacesEveryClientSpellingOfIt() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: name("x_tenant"), value: "evil"))
        fields.append(HTTPField(name: name("X-TENANT"), value: "evil"))
        let headers = upstream(fields, serviceHeaders: [(name: "X-Tenant", value: "acme")])
        #expect(headers[canonicalForm: "x-tenant"] == ["acme"])
        #expect(headers["x_tenant"].isEmpty)
    }

    @Test func foldingLowersCaseAndTurnsUnderscoresIntoDashes() {
        #expect(HeaderPolicy.folded("X_Forwarded_User") == "x-forwarded-user")
        #expect(HeaderPolicy.folded("Accept") == "accept")
        #expect(HeaderPolicy.folded("a_very_long_header_name_beyond_fifteen_bytes") == "a-very-long-header-name-beyond-fifteen-bytes")
        #expect(HeaderPolicy.folded("") == "")
    }

    @Test func clientResponsesLoseHopByHopHeadersAndWhatConnectionLists() {
        let headers = HTTPHeaders([
            ("Content-Type", "application/json"),
            ("Content-Length", "42"),
            ("CONNECTION", "keep-alive,  X-Upstream-Hop\t, ,Trailer"),
            ("x-upstream-hop", "private to the hop"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "Expires"),
            ("Upgrade", "h2c"),
            ("Proxy-Authenticate", "Basic"),
            ("Mcp-Session-Id", "abc"),
            ("Bad Name", "not a token: dropped"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ])
        let fields = HeaderPolicy.clientResponseHeaders(from: headers)
        #expect(fields.map { "\($0.name.canonicalName): \($0.value)" } == [
            "content-type: application/json",
            "content-length: 42",
            "mcp-session-id: abc",
            "set-cookie: a=1",
            "set-cookie: b=2",
        ])
    }

    @Test func aResponseWithoutConnectionKeepsEveryEndToEndHeader() {
        let headers = HTTPHeaders([("Server", "nginx"), ("Date", "Sun, 06 Dec 2026 06:00:00 GMT"), ("Content-Type", "text/event-stream")])
        #expect(HeaderPolicy.clientResponseHeaders(from: headers).count == 3)
    }
}
