public import HTTPTypes
public import NIOHTTP1

/// Which headers cross the gateway, in each direction.
public enum HeaderPolicy {
    /// RFC 9110 §7.6.1 hop-by-hop headers, plus ones the client must not dictate to the upstream.
    static let hopByHop = FieldNameSet([
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect", "http2-settings",
    ])

    /// The gateway sets these itself; client-supplied copies are never trusted.
    static let forwardingHeaders: Set<String> = [
        "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
        // Identity headers: set by the gateway on protected routes, never passed on from a client.
        "x-forwarded-user", "x-forwarded-email", "x-forwarded-client-id",
    ]

    /// The client headers that never reach an upstream as the client sent them: one set, so that
    /// a name is hashed once per header (at most).
    static let neverForwarded = FieldNameSet(hopByHop.names.union(forwardingHeaders))

    /// A header name as servers that fold `_` into `-` (CGI, many frameworks) read it: lower case,
    /// underscores as dashes. Removal decisions compare this form, so `X_Forwarded_User` cannot
    /// ride next to the `X-Forwarded-User` the gateway sets.
    public static func folded(_ name: String) -> String {
        foldedLowercase(name.lowercased())
    }

    /// `folded` for a name already in lower case (an `HTTPField.Name`'s `canonicalName`).
    static func foldedLowercase(_ lowercase: String) -> String {
        // A search of the contiguous bytes: `String.contains(String)` goes through Foundation, and
        // iterating the UTF-8 view costs ~15 instructions a byte, per header, per request.
        let underscore = UInt8(ascii: "_")
        let found = lowercase.utf8.withContiguousStorageIfAvailable { $0.contains(underscore) } ?? lowercase.utf8.contains(underscore)
        guard found else { return lowercase }
        return String(decoding: lowercase.utf8.map { $0 == UInt8(ascii: "_") ? UInt8(ascii: "-") : $0 }, as: UTF8.self)
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
        let connectionListed = Set(fields[values: .connection].flatMap(listMembers).map(foldedLowercase))
        let configured = serviceHeaders.isEmpty ? [] : Set(serviceHeaders.map { folded($0.name) })
        var headers: [(String, String)] = []
        headers.reserveCapacity(fields.count + 3 + serviceHeaders.count)
        for field in fields {
            let name = foldedLowercase(field.name.canonicalName)
            // The per-request and per-route sets are empty on most requests: no hashing for them.
            if neverForwarded.contains(name) || (!connectionListed.isEmpty && connectionListed.contains(name))
                || (!extraRemovals.isEmpty && extraRemovals.contains(name)) || (!configured.isEmpty && configured.contains(name))
            {
                continue
            }
            if name == "cookie", !cookiePrefixes.isEmpty {
                let kept = field.value.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { cookie in
                    !cookiePrefixes.contains { cookie.lowercased().hasPrefix($0.lowercased()) }
                }
                if !kept.isEmpty { headers.append((field.name.rawName, kept.joined(separator: "; "))) }
                continue
            }
            headers.append((field.name.rawName, field.value))
        }
        if let clientAddress { headers.append(("X-Forwarded-For", clientAddress)) }
        headers.append(("X-Forwarded-Proto", forwardedProto))
        if let forwardedHost { headers.append(("X-Forwarded-Host", forwardedHost)) }
        for header in serviceHeaders {
            headers.append((header.name, header.value))
        }
        // Built in one go: `HTTPHeaders.add` scans each name for non-ASCII bytes once more, and
        // every name here is an HTTP token already (an `HTTPField.Name`, the gateway's own, or a
        // configured one the configuration checked).
        return HTTPHeaders(headers)
    }

    /// The members of a comma-separated header list, lower case, with the optional whitespace
    /// around them (RFC 9110 §5.6.1) trimmed and empty ones dropped; without Foundation, which
    /// would bridge each member through NSString.
    static func listMembers(_ value: String) -> [String] {
        let isWhitespace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        return value.utf8.split(separator: UInt8(ascii: ",")).compactMap { member in
            guard let first = member.firstIndex(where: { !isWhitespace($0) }), let last = member.lastIndex(where: { !isWhitespace($0) }) else { return nil }
            return String(decoding: member[first...last], as: UTF8.self).lowercased()
        }
    }

    /// Whether an upstream's response field (its lower-case name) stays between the upstream and
    /// the gateway: `clientResponseHeaders`' rule for one name, `Connection`'s list aside.
    public static func isHopByHopInResponse(_ lowercase: String) -> Bool {
        lowercase != "content-length" && hopByHop.contains(lowercase)
    }

    /// Headers for the client response: the upstream's end-to-end headers, hop-by-hop removed.
    public static func clientResponseHeaders(from headers: HTTPHeaders) -> HTTPFields {
        var connectionListed: [String] = []
        for (name, value) in headers where name.utf8.count == 10 && name.lowercased() == "connection" {
            connectionListed += listMembers(value)
        }
        var fields = HTTPFields()
        fields.reserveCapacity(headers.count)
        for (name, value) in headers {
            // `HTTPField.Name` checks the name and keeps its lower-case form: compared from there.
            guard let fieldName = HTTPField.Name(name) else { continue }
            let lower = fieldName.canonicalName
            if lower == "content-length" {
                // Kept: the body is relayed byte for byte, so the length still holds.
            } else if hopByHop.contains(lower) || (!connectionListed.isEmpty && connectionListed.contains(lower)) {
                continue
            }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        return fields
    }
}

/// Lower-case field names, most other names told apart by their length alone: a name is hashed
/// only when some name in the set is as long (headers are checked against these on every request).
struct FieldNameSet: Sendable {
    let names: Set<String>
    /// Bit n: some name is n bytes long (names of 64 bytes or more are always looked up).
    private let lengths: UInt64

    init(_ names: Set<String>) {
        self.names = names
        self.lengths = names.reduce(0) { $1.utf8.count < 64 ? $0 | 1 << UInt64($1.utf8.count) : $0 }
    }

    func contains(_ name: String) -> Bool {
        let length = name.utf8.count
        if length < 64, lengths & (1 << UInt64(length)) == 0 { return false }
        return names.contains(name)
    }
}

import Foundation
