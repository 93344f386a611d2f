import MCPTransport
import GatewayConfig
import HTTPTypes
import Hummingbird

/// CORS for browser-based clients (MCP Inspector, web apps) on the origins an entry point lists
/// in `allowedOrigins`: preflights answered, responses readable by that origin, with the MCP
/// headers exposed. The origin is echoed, never `*`; an origin that is not listed gets no CORS
/// header at all, so the browser keeps its page from reading anything. Cookies are not involved
/// (credentials travel in `Authorization` or `X-API-Key`), so no `Allow-Credentials`.
struct CrossOrigin: Sendable {
    let entryPoint: EntryPoint

    static let allowMethods = "GET, POST, DELETE, OPTIONS"
    static let allowHeaders = [
        "Authorization", "Content-Type", "Accept", "Mcp-Session-Id", "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "Last-Event-ID", "X-API-Key",
    ]
    static let exposeHeaders = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Retry-After, RateLimit, RateLimit-Policy"

    /// The request's `Origin` when the entry point allows it.
    func allowedOrigin(of request: Request) -> String? {
        guard let origin = request.headers.value(of: .origin) else { return nil }
        return entryPoint.allowedOrigins.contains(origin.lowercased()) ? origin : nil
    }

    /// A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin.
    func preflight(_ request: Request, origin: String) -> Response {
        var headers = HTTPFields()
        headers[.accessControlAllowOrigin] = origin
        headers[.accessControlAllowMethods] = Self.allowMethods
        headers[.accessControlAllowHeaders] = Self.allowHeaders.joined(separator: ", ")
        headers[.accessControlMaxAge] = "600"
        headers[.vary] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        return Response(status: .noContent, headers: headers)
    }

    /// An answer to an allowed origin, readable by it.
    func decorate(_ response: inout Response, origin: String) {
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.accessControlExposeHeaders] = Self.exposeHeaders
        if let vary = response.headers.value(of: .vary) {
            if !vary.lowercased().contains("origin") { response.headers[.vary] = vary + ", Origin" }
        } else {
            response.headers[.vary] = "Origin"
        }
    }
}
