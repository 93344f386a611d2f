import GatewayConfig
import HTTPTypes
import Hummingbird

/// `entryPoints.<e>.redirectTo`: a plain-HTTP entry point that sends every client to the https
/// one with a 308 (method and body kept), except the health checks a load balancer makes over
/// plain HTTP.
///
/// The target host is the public URL's when that is https (a client's Host header never chooses
/// where it is sent); otherwise the request's own host name with the TLS entry point's port.
struct HTTPSRedirect: HTTPResponder {
    typealias Context = GatewayRequestContext

    let target: EntryPoint
    let holder: ConfigurationHolder

    func respond(to request: Request, context: Context) async throws -> Response {
        switch request.uri.path {
        case "/healthz":
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: .init(string: #"{"status":"ok"}"#)))
        default:
            break
        }
        guard let location = Self.location(for: request, target: target, publicURL: holder.current.configuration.publicURL) else {
            return Response(status: .badRequest, headers: [.contentType: "application/json"], body: .init(byteBuffer: .init(string: #"{"error":"bad_host","message":"the request has no usable Host","status":400}"#)))
        }
        return Response(status: .permanentRedirect, headers: [.location: location, .contentLength: "0"])
    }

    /// The https URL of the same path and query.
    static func location(for request: Request, target: EntryPoint, publicURL: PublicURL) -> String? {
        var pathAndQuery = request.uri.path.isEmpty ? "/" : request.uri.path
        if let query = request.uri.query, !query.isEmpty { pathAndQuery += "?\(query)" }
        // An absolute-form or scheme-relative target ("//evil.example/") must stay a path.
        while pathAndQuery.hasPrefix("//") { pathAndQuery.removeFirst() }
        if publicURL.scheme == "https" {
            return "\(publicURL.origin)\(pathAndQuery)"
        }
        let host = IncomingRequest.hostWithoutPort(request.head.authority ?? "")
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-.:[]".contains($0)) }) else { return nil }
        let port = target.port == 443 ? "" : ":\(target.port)"
        return "https://\(host)\(port)\(pathAndQuery)"
    }
}
