import GatewayUpstream
import GatewayConfig
import HTTPTypes
import NIOCore
import NIOHTTP1
import Testing

/// Which headers cross the gateway, each way: what an attacker would try to smuggle through (case
/// and underscore variants, names listed in `Connection` with odd spacing, forwarding headers of
/// their own) never reaches the other side, and everything end to end does, in order.
@Suite struct HeaderPolicyTests {
    private func upstream(_ fields: HTTPFields, removing: Set<String> = [], serviceHeaders: [(name: String, value: String)] = []) -> HTTPHeaders {
        HeaderPolicy.upstreamRequestHeaders(
            from: fields, rules: UpstreamHeaderRules(removing: removing, serviceHeaders: serviceHeaders), identity: nil, identityToken: nil,
            removingCookies: ["mcpgw-", "__Host-mcpgw-"], clientAddress: "203.0.113.9", forwardedProto: "https", forwardedHost: "gw.example"
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

    /// A router that names its own identity headers: no client spelling of them passes, and the
    /// verified caller's identity goes out under them, after the forwarding headers.
    @Test func aRoutersIdentityHeadersAreTheGatewaysOnly() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: name("X_Remote_User"), value: "admin"))
        fields.append(HTTPField(name: name("x-remote-user"), value: "admin"))
        fields.append(HTTPField(name: name("X-REMOTE-CLIENT"), value: "forged"))
        fields.append(HTTPField(name: name("x_remote_mail"), value: "root@example.com"))
        fields.append(HTTPField(name: name("X-Signed-Identity"), value: "forged.jwt"))
        fields.append(HTTPField(name: .accept, value: "*/*"))
        let rules = UpstreamHeaderRules(
            removing: [], identityNames: IdentityHeaderNames(user: "X-Remote-User", email: "X-Remote-Mail", clientID: "X-Remote-Client"),
            serviceHeaders: [(name: "X-Tenant", value: "acme")], identityTokenHeader: "X-Signed-Identity"
        )
        let headers = HeaderPolicy.upstreamRequestHeaders(
            from: fields, rules: rules, identity: CallerIdentity(login: "octocat", clientID: "client-1", email: nil), identityToken: "signed.jwt",
            removingCookies: [], clientAddress: nil, forwardedProto: "https", forwardedHost: nil
        )
        #expect(headers.map { "\($0.name): \($0.value)" } == [
            "Accept: */*",
            "X-Forwarded-Proto: https",
            "X-Remote-User: octocat",
            "X-Remote-Client: client-1",
            "X-Tenant: acme",
            "X-Signed-Identity: signed.jwt",
        ])
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

/// The fast relay writes its upstream request straight from the client's fields
/// (`UpstreamRequestWriter.writePost`): byte for byte what the full pipeline's way makes, through
/// `HeaderPolicy.upstreamRequestHeaders`, `replaceOrAdd` of the credentials, `Host` and
/// `Content-Length`, and `UpstreamRequestWriter.write`; refused where that is refused.
@Suite struct DirectUpstreamRequestTests {
    struct Case {
        var fields: HTTPFields
        var removing: Set<String> = []
        var clientAddress: String? = "203.0.113.9"
        var forwardedHost: String? = "gw.example"
        var serviceHeaders: [(name: String, value: String)] = []
        var identityNames = IdentityHeaderNames.default
        var identity: CallerIdentity?
        var credentials: [(name: String, value: String)] = []
        var target = "/mcp?x=1"
        /// nil: a session's GET stream (no body, no `Content-Length`).
        var body: ByteBuffer? = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#)
    }

    private static func field(_ name: String, _ value: String) -> HTTPField {
        HTTPField(name: HTTPField.Name(name)!, value: value)  // test input: valid tokens only
    }

    private static func fields(_ pairs: [(String, String)]) -> HTTPFields {
        HTTPFields(pairs.map { field($0.0, $0.1) })
    }

    /// The route's rules as the configuration compiles them.
    private static func rulesOf(_ c: Case) -> UpstreamHeaderRules {
        UpstreamHeaderRules(removing: c.removing, identityNames: c.identityNames, serviceHeaders: c.serviceHeaders)
    }

    /// The full pipeline's way; nil when refused.
    private static func composed(_ c: Case) -> ByteBuffer? {
        var headers = HeaderPolicy.upstreamRequestHeaders(
            from: c.fields, rules: Self.rulesOf(c), identity: c.identity, identityToken: nil, removingCookies: ["mcpgw-", "__Host-mcpgw-"],
            clientAddress: c.clientAddress, forwardedProto: "https", forwardedHost: c.forwardedHost
        )
        for credential in c.credentials { headers.replaceOrAdd(name: credential.name, value: credential.value) }
        headers.replaceOrAdd(name: "Host", value: "upstream.internal:8080")
        if let body = c.body { headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes)) }
        var buffer = ByteBuffer()
        do {
            let head = HTTPRequestHead(version: .http1_1, method: c.body == nil ? .GET : .POST, uri: c.target, headers: headers)
            try UpstreamRequestWriter.write(head, body: c.body ?? ByteBuffer(), into: &buffer)
        } catch {
            return nil
        }
        return buffer
    }

    private static func direct(_ c: Case) -> ByteBuffer? {
        var buffer = ByteBuffer()
        do {
            try UpstreamRequestWriter.writePost(
                method: c.body == nil ? "GET" : "POST", target: c.target, fields: c.fields, rules: Self.rulesOf(c), identity: c.identity,
                removingCookies: ["mcpgw-", "__Host-mcpgw-"], clientAddress: c.clientAddress, forwardedProto: "https", forwardedHost: c.forwardedHost, credentials: c.credentials,
                host: "upstream.internal:8080", body: c.body, into: &buffer
            )
        } catch {
            return nil
        }
        return buffer
    }

    static let cases: [(String, Case)] = [
        ("wrk's tools/call", Case(fields: fields([
            ("Host", "127.0.0.1:8080"), ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"), ("Authorization", "Bearer abc"), ("Content-Length", "71"),
        ]), removing: ["authorization", "cookie"])),
        ("the SDK's lower case, no address, no host", Case(fields: fields([
            ("accept", "application/json, text/event-stream"), ("content-type", "application/json"), ("user-agent", "python-httpx/0.28"),
            ("mcp-protocol-version", "2026-07-28"), ("accept-encoding", "gzip, deflate"), ("connection", "keep-alive"),
        ]), clientAddress: nil, forwardedHost: nil)),
        ("hop-by-hop, smuggled forwarding and identity headers, cookies", Case(fields: fields([
            ("Connection", " keep-alive ,\tX-Secret-Hop"), ("X-Secret-Hop", "listed"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
            ("X-Forwarded-For", "198.51.100.1"), ("X_Forwarded_Proto", "http"), ("x_forwarded_user", "admin"), ("Forwarded", "for=x"),
            ("Cookie", "theme=dark; mcpgw-session=s3cret; __Host-mcpgw-b=x"), ("Cookie", "mcpgw-only=1"), ("X_Custom", "kept"),
            ("X-Unicode", "grüße ☃"),
        ]), removing: ["x-forwarded-user"])),
        ("credentials replace the client's copy in any case", Case(fields: fields([
            ("x-api-key", "client's"), ("X-API-KEY", "client's again"), ("Accept", "*/*"),
        ]), credentials: [("X-Api-Key", "the service's")])),
        ("a credential replaces a configured header, the last of a name wins", Case(fields: fields([("Accept", "*/*")]),
            serviceHeaders: [("X-Tenant", "a"), ("Authorization", "Basic configured")],
            credentials: [("authorization", "Bearer first"), ("AUTHORIZATION", "Bearer second"), ("X-Other", "o")])),
        ("configured headers replace every client spelling", Case(fields: fields([("x_tenant", "evil"), ("X-TENANT", "evil too")]),
            serviceHeaders: [("X-Tenant", "acme")])),
        ("an empty body", Case(fields: fields([("Accept", "*/*")]), body: ByteBuffer())),
        ("a session's GET stream: no body, a client's Content-Length left out", Case(fields: fields([
            ("Accept", "text/event-stream"), ("Mcp-Session-Id", "s-1"), ("Last-Event-ID", "7"), ("Content-Length", "0"),
        ]), body: nil)),
        ("a protected route: the caller's identity, client copies of it dropped", Case(fields: fields([
            ("Accept", "*/*"), ("X-Forwarded-User", "admin"), ("x_forwarded_email", "root@example.com"), ("X-User", "forged"),
            ("Authorization", "Bearer gateway-token"), ("Cookie", "theme=dark"),
        ]), removing: ["authorization", "cookie"], identityNames: IdentityHeaderNames(user: "X-User", email: "X-Email", clientID: "X-Client"),
            identity: CallerIdentity(login: "octocat", clientID: "client-1", email: "octo@example.com"))),
        ("refused: an identity value with a line break", Case(fields: fields([("Accept", "*/*")]),
            identity: CallerIdentity(login: "octocat\r\nX-Admin: yes", clientID: "client-1", email: nil))),
        ("refused: an identity header name that is no token", Case(fields: fields([("Accept", "*/*")]),
            identityNames: IdentityHeaderNames(user: "X User", email: "X-Email", clientID: "X-Client"),
            identity: CallerIdentity(login: "octocat", clientID: "client-1", email: nil))),
        ("refused: a configured value with a line break", Case(fields: fields([("Accept", "*/*")]), serviceHeaders: [("X-Bad", "a\r\nInjected: yes")])),
        ("refused: a configured name that is no token", Case(fields: fields([("Accept", "*/*")]), serviceHeaders: [("X Bad", "a")])),
        ("refused: a credential with a NUL", Case(fields: fields([("Accept", "*/*")]), credentials: [("X-Key", "a\u{0}b")])),
        ("refused: a forwarded host with a line break", Case(fields: fields([("Accept", "*/*")]), forwardedHost: "gw.example\r\nX-Evil: 1")),
        ("refused: a target with a space", Case(fields: fields([("Accept", "*/*")]), target: "/mcp?x=a b")),
    ]

    @Test(arguments: cases.map(\.0)) func theSameBytesOrTheSameRefusal(_ name: String) throws {
        let c = try #require(Self.cases.first { $0.0 == name }).1
        let expected = Self.composed(c)
        let written = Self.direct(c)
        #expect(written == expected, "\(name): \(written.map { String(buffer: $0) } ?? "refused") against \(expected.map { String(buffer: $0) } ?? "refused")")
    }

    @Test func theRefusalsAreRefusals() {
        let refused = Self.cases.filter { $0.0.hasPrefix("refused: ") }
        #expect(refused.count == 7)
        for (name, c) in refused {
            #expect(Self.direct(c) == nil, "\(name)")
            #expect(Self.composed(c) == nil, "\(name)")
        }
    }
}
