public import HTTPTypes
public import GatewayConfig
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

    /// Headers for the upstream request: end-to-end client headers minus hop-by-hop, minus the
    /// route's removals (`rules`) and cookies whose name starts with one of `removingCookies`, then
    /// forwarding headers, then the caller's identity (protected routes), the service's configured
    /// headers and the caller's signed identity token (services that ask for one).
    public static func upstreamRequestHeaders(
        from fields: HTTPFields, rules: UpstreamHeaderRules, identity: CallerIdentity?, identityToken: String?, removingCookies cookiePrefixes: [String],
        clientAddress: String?, forwardedProto: String, forwardedHost: String?
    ) -> HTTPHeaders {
        var list = HeaderList()
        list.headers.reserveCapacity(fields.count + 6 + rules.serviceHeaders.count)
        upstreamRequestHeaders(
            from: fields, rules: rules, identity: identity, identityToken: identityToken, removingCookies: cookiePrefixes, clientAddress: clientAddress,
            forwardedProto: forwardedProto, forwardedHost: forwardedHost, into: &list
        )
        // Built in one go: `HTTPHeaders.add` scans each name for non-ASCII bytes once more, and
        // every name here is an HTTP token already (an `HTTPField.Name`, the gateway's own, or a
        // configured one the configuration checked).
        return HTTPHeaders(list.headers)
    }

    /// The headers as a list, for `HTTPHeaders`.
    private struct HeaderList: UpstreamHeaderSink {
        var headers: [(String, String)] = []
        mutating func add(_ name: String, _ value: String, checked: HeaderChecks) { headers.append((name, value)) }
    }

    /// `upstreamRequestHeaders`' headers, in order, handed to `sink` (the fast relay writes them
    /// straight into the request's bytes). Nothing is built per request but the headers
    /// themselves: the route's removals are looked up by length (`FieldNameSet`), and the names the
    /// gateway adds were checked when the rules were made.
    static func upstreamRequestHeaders<Sink: UpstreamHeaderSink>(
        from fields: HTTPFields,
        rules: UpstreamHeaderRules,
        identity: CallerIdentity?,
        identityToken: String?,
        removingCookies cookiePrefixes: [String],
        clientAddress: String?,
        forwardedProto: String,
        forwardedHost: String?,
        into sink: inout Sink
    ) {
        // Most requests list nothing in `Connection` but `keep-alive`: an array, not a set.
        var connectionListed: [String] = []
        for value in fields[values: .connection] { connectionListed += listMembers(value).map(foldedLowercase) }
        for field in fields {
            let name = foldedLowercase(field.name.canonicalName)
            if neverForwarded.contains(name) || rules.removed.contains(name) || (!connectionListed.isEmpty && connectionListed.contains(name)) {
                continue
            }
            if name == "cookie", !cookiePrefixes.isEmpty {
                let kept = field.value.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { cookie in
                    !cookiePrefixes.contains { cookie.lowercased().hasPrefix($0.lowercased()) }
                }
                if !kept.isEmpty { sink.add(field.name.rawName, kept.joined(separator: "; "), checked: .both) }
                continue
            }
            sink.add(field.name.rawName, field.value, checked: .both)
        }
        if let clientAddress { sink.add("X-Forwarded-For", clientAddress, checked: .name) }
        sink.add("X-Forwarded-Proto", forwardedProto, checked: .name)
        if let forwardedHost { sink.add("X-Forwarded-Host", forwardedHost, checked: .name) }
        if let identity {
            let names = rules.identityNames
            sink.add(names.user, identity.login, checked: rules.identityNamesChecked)
            sink.add(names.clientID, identity.clientID, checked: rules.identityNamesChecked)
            if let email = identity.email { sink.add(names.email, email, checked: rules.identityNamesChecked) }
        }
        for header in rules.serviceHeaders {
            sink.add(header.name, header.value, checked: rules.serviceHeadersChecked)
        }
        if let identityToken, let header = rules.identityTokenHeader { sink.add(header, identityToken, checked: rules.identityTokenHeaderChecked) }
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

/// Where `HeaderPolicy` hands the upstream request's headers, in order, with what is known of
/// them: `checked`, a field of the client's request as `HTTPFields` holds it (a token for a name,
/// a value without line breaks or NUL), or a part of one; `.name`, a name the gateway spells
/// itself; `.none`, a configured header (checked where it is written).
protocol UpstreamHeaderSink {
    mutating func add(_ name: String, _ value: String, checked: HeaderChecks)
}

/// What is known to be sendable of a header.
enum HeaderChecks {
    case none, name, both
}

/// Lower-case field names, looked up by their length first: a name is compared only with the
/// names of the set as long as it (headers are checked against these on every request; hashing
/// each name cost more than the few comparisons).
struct FieldNameSet: Sendable {
    let names: Set<String>
    /// The names of each length below 64 (longer ones are looked up in `names`).
    private let byLength: [[String]]

    init(_ names: Set<String>) {
        self.names = names
        var byLength = Array(repeating: [String](), count: 64)
        for name in names where name.utf8.count < 64 { byLength[name.utf8.count].append(name) }
        self.byLength = byLength
    }

    func contains(_ name: String) -> Bool {
        let length = name.utf8.count
        guard length < 64 else { return names.contains(name) }
        for candidate in byLength[length] where candidate == name { return true }
        return false
    }
}

/// Who the caller is, as the identity headers of a protected route tell the upstream.
public struct CallerIdentity: Sendable {
    public var login: String
    public var clientID: String
    public var email: String?

    public init(login: String, clientID: String, email: String?) {
        self.login = login
        self.clientID = clientID
        self.email = email
    }
}

/// What one route's upstream requests leave out of the client's headers and add of the
/// gateway's own, worked out once when the configuration is compiled: before, each request built
/// a set of the configured names (lower-casing each), hashed every client header into it and
/// the route's removals, and checked each configured name byte by byte.
public struct UpstreamHeaderRules: Sendable {
    /// Folded names no client header of this route is sent under, beside
    /// `HeaderPolicy.neverForwarded`: the route's removals (every router's identity header names,
    /// the client's credentials where the gateway keeps them), this router's identity header
    /// names, the service's configured headers (its copy replaces every client spelling) and its
    /// identity-token header.
    let removed: FieldNameSet
    /// The names the caller's identity goes out under (protected routes).
    let identityNames: IdentityHeaderNames
    let identityNamesChecked: HeaderChecks
    /// The service's configured headers, after the forwarding and identity headers.
    let serviceHeaders: [(name: String, value: String)]
    /// `.both` when every configured header was found sendable here; otherwise each request
    /// checks them where they are written and is refused (as the configuration should have been).
    let serviceHeadersChecked: HeaderChecks
    /// The header of the caller's signed identity (`identityToken.header`), last.
    let identityTokenHeader: String?
    let identityTokenHeaderChecked: HeaderChecks

    /// `removing`: folded names (`HeaderPolicy.folded`).
    public init(
        removing: Set<String>, identityNames: IdentityHeaderNames = .default, serviceHeaders: [(name: String, value: String)] = [], identityTokenHeader: String? = nil
    ) {
        var removed = removing
        removed.formUnion(identityNames.all.map(HeaderPolicy.folded))
        removed.formUnion(serviceHeaders.map { HeaderPolicy.folded($0.name) })
        if let identityTokenHeader { removed.insert(HeaderPolicy.folded(identityTokenHeader)) }
        self.removed = FieldNameSet(removed)
        self.identityNames = identityNames
        self.identityNamesChecked = identityNames.all.allSatisfy(UpstreamRequestWriter.isToken) ? .name : .none
        self.serviceHeaders = serviceHeaders
        self.serviceHeadersChecked = serviceHeaders.allSatisfy { UpstreamRequestWriter.isToken($0.name) && UpstreamRequestWriter.isFieldValue($0.value) } ? .both : .none
        self.identityTokenHeader = identityTokenHeader
        self.identityTokenHeaderChecked = identityTokenHeader.map(UpstreamRequestWriter.isToken) == true ? .name : .none
    }

    /// A route's rules for an HTTP service.
    public init(removing: Set<String>, identityNames: IdentityHeaderNames, service: HTTPServiceConfiguration) {
        self.init(removing: removing, identityNames: identityNames, serviceHeaders: service.headers, identityTokenHeader: service.identityToken?.header)
    }
}

import Foundation
