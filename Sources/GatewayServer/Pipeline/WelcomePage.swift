import AuthorizationEndpoints
import GatewayConfig
import Hummingbird

/// `GET /` on the gateway's own host: the MCP URLs it serves and how to add one to Claude, as a
/// small page, or as JSON for a client that asks for it (`Accept: application/json`).
enum WelcomePage {
    /// Whether `host` (without port) is the gateway's own: the public URL's host, or, when that is
    /// a loopback name, any loopback name.
    static func isGatewayHost(_ host: String, publicURL: PublicURL) -> Bool {
        let loopback: Set<String> = ["localhost", "127.0.0.1", "[::1]", "::1"]
        let own = publicURL.host.lowercased()
        let asked = host.lowercased()
        return asked == own || (loopback.contains(own) && loopback.contains(asked))
    }

    static func response(to request: Request, configuration: GatewayConfiguration) -> Response {
        let endpoints = configuration.routers.map { router in
            (name: router.name, url: router.resourceURL(publicURL: configuration.publicURL), signIn: router.auth == .oauth)
        }
        if request.headers[.accept]?.contains("application/json") == true {
            let list: [[String: Any]] = endpoints.map { ["router": $0.name, "url": $0.url, "signIn": $0.signIn] }
            return JSONResponse.make(status: .ok, object: ["mcpServers": list], headers: [.cacheControl: "no-store"])
        }
        let rows = endpoints.map { endpoint in
            "<dt>\(AuthPages.escape(endpoint.name))</dt><dd><code>\(AuthPages.escape(endpoint.url))</code><br><span class=\"note\">\(endpoint.signIn ? "sign-in required" : "public")</span></dd>"
        }.joined()
        let body = """
        <h1>MCP servers on this gateway</h1>
        <dl>\(rows.isEmpty ? "<dt>none</dt><dd>no routers are configured</dd>" : rows)</dl>
        <p class="note">To add one to Claude: Settings → Connectors → Add custom connector, and paste
        its URL. Claude signs in through this gateway when the server needs it.</p>
        """
        return AuthPages.response(.ok, html: AuthPages.document(title: "mcp-gateway", body: body), extraHeaders: [.cacheControl: "no-store"])
    }
}
