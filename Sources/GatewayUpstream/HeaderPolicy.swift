public import HTTPTypes
public import NIOHTTP1

/// Which headers cross the gateway, in each direction.
public enum HeaderPolicy {
    /// RFC 9110 §7.6.1 hop-by-hop headers, plus ones the client must not dictate to the upstream.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect", "http2-settings",
    ]

    /// The gateway sets these itself; client-supplied copies are never trusted.
    static let forwardingHeaders: Set<String> = [
        "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
        // Identity headers: set by the gateway on protected routes, never passed on from a client.
        "x-forwarded-user", "x-forwarded-email", "x-forwarded-client-id",
    ]

    /// A header name as servers that fold `_` into `-` (CGI, many frameworks) read it: lower case,
    /// underscores as dashes. Removal decisions compare this form, so `X_Forwarded_User` cannot
    /// ride next to the `X-Forwarded-User` the gateway sets.
    public static func folded(_ name: String) -> String {
        let folded = name.lowercased()
        // Byte search: `String.contains(String)` goes through Foundation, per header, per request.
        guard folded.utf8.contains(UInt8(ascii: "_")) else { return folded }
        return folded.replacingOccurrences(of: "_", with: "-")
    }

    /// Headers for the upstream request: end-to-end client headers minus hop-by-hop, `removing`
    /// (folded names, e.g. every identity header and the gateway's own credentials), cookies whose
    /// name starts with one of `removingCookies`, then forwarding headers, then the service's
    /// configured headers.
    public static func upstreamRequestHeaders(
        from fields: HTTPFields,
        removing extraRemovals: Set<String>,
        removingCookies cookiePrefixes: [String] = [],
        clientAddress: String?,
        forwardedProto: String,
        forwardedHost: String?,
        serviceHeaders: [(name: String, value: String)]
    ) -> HTTPHeaders {
        let connectionListed = Set(fields[values: .connection].flatMap { $0.split(separator: ",") }.map {
            folded($0.trimmingCharacters(in: .whitespaces))
        })
        let configured = Set(serviceHeaders.map { folded($0.name) })
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count + 4)
        for field in fields {
            let name = folded(field.name.canonicalName)
            if hopByHop.contains(name) || forwardingHeaders.contains(name) || connectionListed.contains(name)
                || extraRemovals.contains(name) || configured.contains(name)
            {
                continue
            }
            if name == "cookie", !cookiePrefixes.isEmpty {
                let kept = field.value.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { cookie in
                    !cookiePrefixes.contains { cookie.lowercased().hasPrefix($0.lowercased()) }
                }
                if !kept.isEmpty { headers.add(name: field.name.rawName, value: kept.joined(separator: "; ")) }
                continue
            }
            headers.add(name: field.name.rawName, value: field.value)
        }
        if let clientAddress { headers.add(name: "X-Forwarded-For", value: clientAddress) }
        headers.add(name: "X-Forwarded-Proto", value: forwardedProto)
        if let forwardedHost { headers.add(name: "X-Forwarded-Host", value: forwardedHost) }
        for header in serviceHeaders {
            headers.add(name: header.name, value: header.value)
        }
        return headers
    }

    /// Headers for the client response: the upstream's end-to-end headers, hop-by-hop removed.
    public static func clientResponseHeaders(from headers: HTTPHeaders) -> HTTPFields {
        let connectionListed = Set(headers[canonicalForm: "connection"].map { $0.lowercased() })
        var fields = HTTPFields()
        for (name, value) in headers {
            let lower = name.lowercased()
            if lower == "content-length" {
                // Kept: the body is relayed byte for byte, so the length still holds.
            } else if hopByHop.contains(lower) || connectionListed.contains(lower) {
                continue
            }
            guard let fieldName = HTTPField.Name(name) else { continue }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        return fields
    }
}

import Foundation
