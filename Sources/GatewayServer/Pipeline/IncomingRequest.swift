import GatewayStdio
import GatewayUpstream
import MCPTransport
import Foundation
import GatewayConfig
import GatewayRouting
import HTTPTypes
import Hummingbird

/// The routing view of a Hummingbird request.
struct IncomingRequest: RoutableRequest {
    let method: String
    let host: String
    /// The path as routing sees it: normalized the way fronting proxies normalize it.
    let path: String
    /// The path as sent.
    let rawPath: String
    let rawQuery: String?
    let fields: HTTPFields

    static let forwardedHost = HTTPField.Name("X-Forwarded-Host")!
    static let forwardedURI = HTTPField.Name("X-Forwarded-Uri")!
    static let forwardedMethod = HTTPField.Name("X-Forwarded-Method")!

    /// Why a request cannot be routed at all (answered 400).
    enum Refusal: Error {
        case missingForwardedFields
        case path(RequestPath.Refusal)
        /// The raw and the normalized path lead to different routers.
        case ambiguousPath

        var detail: String {
            switch self {
            case .missingForwardedFields: "forward auth needs X-Forwarded-Host and X-Forwarded-Uri"
            case .path(let refusal): refusal.description
            case .ambiguousPath: "the path as sent and the path as normalized lead to different routers"
            }
        }
    }

    init(_ request: Request) throws(Refusal) {
        self.method = request.method.rawValue
        self.host = Self.hostWithoutPort(request.head.authority ?? "")
        self.rawPath = request.uri.path
        do { self.path = try RequestPath.normalize(rawPath) } catch { throw .path(error) }
        self.rawQuery = request.uri.query
        self.fields = request.headers
    }

    /// The request a proxy in front asks about (forward auth): `X-Forwarded-Method/Host/Uri`.
    init(forwardedBy request: Request) throws(Refusal) {
        guard let host = request.headers[Self.forwardedHost], let uri = request.headers[Self.forwardedURI] else {
            throw .missingForwardedFields
        }
        self.method = (request.headers[Self.forwardedMethod] ?? "GET").uppercased()
        self.host = Self.hostWithoutPort(host.split(separator: ",").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? host)
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var rawPath = parts.first.map(String.init) ?? "/"
        // An absolute URI (`http://host/path`): its path.
        if !rawPath.hasPrefix("/"), let scheme = rawPath.range(of: "://") {
            let afterAuthority = rawPath[scheme.upperBound...].firstIndex(of: "/")
            rawPath = afterAuthority.map { String(rawPath[$0...]) } ?? "/"
        }
        self.rawPath = rawPath
        do { self.path = try RequestPath.normalize(rawPath) } catch { throw .path(error) }
        self.rawQuery = parts.count > 1 ? String(parts[1]) : nil
        self.fields = request.headers
    }

    /// The request's route in `table`, refusing a request whose path as sent would reach another
    /// router (or none) than its normalized path: whatever reads the raw text then cannot be
    /// steered elsewhere than the gateway decided.
    func route<Target>(in table: RouteTable<Target>?) throws(Refusal) -> RouteTable<Target>.Entry? {
        guard let table else { return nil }
        let match = table.match(self)
        if rawPath != path {
            let raw = table.match(RawPathView(request: self))
            if raw?.name != match?.name { throw .ambiguousPath }
        }
        return match
    }

    /// The same request with its path as sent, to see where that text would lead.
    private struct RawPathView: RoutableRequest {
        let request: IncomingRequest
        var method: String { request.method }
        var host: String { request.host }
        var path: String { request.rawPath }
        var queryItems: [(name: String, value: String)] { request.queryItems }
        func headerValues(_ name: String) -> [String] { request.headerValues(name) }
    }

    var queryItems: [(name: String, value: String)] {
        guard let rawQuery, !rawQuery.isEmpty else { return [] }
        return rawQuery.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            return (name, value)
        }
    }

    func headerValues(_ name: String) -> [String] {
        guard let fieldName = HTTPField.Name(name) else { return [] }
        return fields[values: fieldName]
    }

    static func hostWithoutPort(_ authority: String) -> String {
        let lowered = authority.lowercased()
        if lowered.hasPrefix("[") {
            if let close = lowered.firstIndex(of: "]") { return String(lowered[...close]) }
            return lowered
        }
        if let colon = lowered.firstIndex(of: ":") { return String(lowered[..<colon]) }
        return lowered
    }
}


