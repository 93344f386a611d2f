import GatewayRouting
import HTTPTypes
import Hummingbird

/// The routing view of a Hummingbird request.
struct IncomingRequest: RoutableRequest {
    let method: String
    let host: String
    let path: String
    let rawQuery: String?
    let fields: HTTPFields

    init(_ request: Request) {
        self.method = request.method.rawValue
        self.host = Self.hostWithoutPort(request.head.authority ?? "")
        self.path = request.uri.path
        self.rawQuery = request.uri.query
        self.fields = request.headers
    }

    /// The request a proxy in front asks about (forward auth): `X-Forwarded-Method/Host/Uri`.
    init?(forwardedBy request: Request) {
        guard let host = request.headers[HTTPField.Name("X-Forwarded-Host")!], let uri = request.headers[HTTPField.Name("X-Forwarded-Uri")!] else {
            return nil
        }
        self.method = (request.headers[HTTPField.Name("X-Forwarded-Method")!] ?? "GET").uppercased()
        self.host = Self.hostWithoutPort(host.split(separator: ",").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? host)
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        self.path = parts.first.map(String.init) ?? "/"
        self.rawQuery = parts.count > 1 ? String(parts[1]) : nil
        self.fields = request.headers
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

import Foundation
