import AuthorizationEndpoints
import GatewayConfig
import Hummingbird
import GatewayPages

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
        let rows: [[String: String]] = endpoints.map { ["name": $0.name, "url": $0.url, "access": $0.signIn ? "sign-in required" : "public"] }
        let page = Pages.render("welcome", ["title": "mcp-gateway", "endpoints": rows])
        return AuthPages.response(.ok, html: page, extraHeaders: [.cacheControl: "no-store"])
    }
}
