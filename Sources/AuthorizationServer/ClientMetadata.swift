import Foundation

/// Registered client metadata (RFC 7591 §2), validated. Unknown fields are not kept.
public struct ClientMetadata: Codable, Sendable, Equatable {
    public enum AuthMethod: String, Codable, Sendable {
        case none
        case clientSecretBasic = "client_secret_basic"
        case clientSecretPost = "client_secret_post"
        /// RFC 7523 client assertions signed with the client's keys; Client ID Metadata Documents
        /// only (ChatGPT's), never registration.
        case privateKeyJWT = "private_key_jwt"
    }

    public var redirect_uris: [String]
    public var token_endpoint_auth_method: AuthMethod
    public var grant_types: [String]
    public var response_types: [String]
    public var client_name: String?
    public var client_uri: String?
    public var logo_uri: String?
    public var scope: String?
    public var contacts: [String]?
    public var tos_uri: String?
    public var policy_uri: String?
    public var software_id: String?
    public var software_version: String?
    public var application_type: String
    /// A `private_key_jwt` document's keys: where they are published, or the set itself (JSON).
    public var jwks_uri: String?
    public var jwks: String?

    public var isConfidential: Bool { token_endpoint_auth_method != .none }

    /// A public client of the gateway's own (the admin page), known without registration.
    public static func builtIn(name: String, redirectURI: String) -> ClientMetadata {
        ClientMetadata(
            redirect_uris: [redirectURI], token_endpoint_auth_method: .none, grant_types: ["authorization_code"], response_types: ["code"],
            client_name: name, application_type: "web"
        )
    }
}

/// An RFC 7591 §3.2.2 error.
public struct RegistrationError: Error, Equatable, Sendable {
    public var code: String
    public var description: String

    static func redirect(_ description: String) -> RegistrationError {
        RegistrationError(code: "invalid_redirect_uri", description: description)
    }

    static func metadata(_ description: String) -> RegistrationError {
        RegistrationError(code: "invalid_client_metadata", description: description)
    }
}

public enum ClientMetadataValidator {
    public static let supportedGrantTypes: Set<String> = ["authorization_code", "refresh_token"]
    static let loopbackHosts: Set<String> = ["127.0.0.1", "[::1]", "::1", "localhost"]
    /// Schemes that execute or embed content: never a redirect target.
    static let forbiddenSchemes: Set<String> = ["javascript", "data", "vbscript", "file", "blob", "about"]

    /// Validates a registration (or RFC 7592 update) request body.
    public static func validate(_ json: [String: Any]) throws(RegistrationError) -> ClientMetadata {
        func string(_ key: String, maxLength: Int = 2048) throws(RegistrationError) -> String? {
            guard let value = json[key] else { return nil }
            guard let text = value as? String else { throw .metadata("\(key) must be a string") }
            guard text.utf8.count <= maxLength else { throw .metadata("\(key) is too long") }
            return text
        }
        // Every stored field is bounded: a registration is open to anyone.
        func strings(_ key: String, maxLength: Int = 2048) throws(RegistrationError) -> [String]? {
            guard let value = json[key] else { return nil }
            guard let list = value as? [String] else { throw .metadata("\(key) must be an array of strings") }
            guard list.count <= 20 else { throw .metadata("\(key) has too many entries") }
            guard list.allSatisfy({ $0.utf8.count <= maxLength }) else { throw .metadata("an entry of \(key) is too long") }
            return list
        }

        let applicationType = try string("application_type") ?? "web"
        guard ["web", "native"].contains(applicationType) else {
            throw .metadata("application_type must be \"web\" or \"native\"")
        }
        guard let redirects = try strings("redirect_uris"), !redirects.isEmpty else {
            throw .redirect("redirect_uris is required and must not be empty")
        }
        for uri in redirects {
            try validateRedirectURI(uri, applicationType: applicationType)
        }

        let methodText = try string("token_endpoint_auth_method") ?? "client_secret_basic"
        guard let method = ClientMetadata.AuthMethod(rawValue: methodText), method != .privateKeyJWT else {
            throw .metadata("token_endpoint_auth_method must be none, client_secret_basic or client_secret_post")
        }
        let grants = try strings("grant_types") ?? ["authorization_code"]
        guard !grants.isEmpty, Set(grants).isSubset(of: supportedGrantTypes) else {
            throw .metadata("grant_types may contain only authorization_code and refresh_token")
        }
        guard grants.contains("authorization_code") else {
            throw .metadata("grant_types must include authorization_code")
        }
        let responses = try strings("response_types") ?? ["code"]
        guard responses == ["code"] else { throw .metadata("response_types must be [\"code\"]") }

        var metadata = ClientMetadata(
            redirect_uris: redirects, token_endpoint_auth_method: method, grant_types: grants, response_types: responses,
            client_name: try string("client_name", maxLength: 200), client_uri: nil, logo_uri: nil, scope: try string("scope", maxLength: 1000),
            contacts: try strings("contacts", maxLength: 320), tos_uri: nil, policy_uri: nil, software_id: try string("software_id", maxLength: 200),
            software_version: try string("software_version", maxLength: 100), application_type: applicationType
        )
        for key in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
            guard let uri = try string(key) else { continue }
            guard let components = URLComponents(string: uri), components.scheme?.lowercased() == "https", components.host?.isEmpty == false else {
                throw .metadata("\(key) must be an https URL")
            }
            switch key {
            case "client_uri": metadata.client_uri = uri
            case "logo_uri": metadata.logo_uri = uri
            case "tos_uri": metadata.tos_uri = uri
            default: metadata.policy_uri = uri
            }
        }
        return metadata
    }

    /// https anywhere; http only for loopback hosts (compared exactly, never by prefix); custom
    /// schemes only for native apps; never fragments, credentials or script/data schemes.
    public static func validateRedirectURI(_ uri: String, applicationType: String) throws(RegistrationError) {
        guard uri.count <= 2048, !uri.contains(where: { $0.isWhitespace }), let components = URLComponents(string: uri),
              let scheme = components.scheme?.lowercased()
        else {
            throw .redirect("\(uri) is not an absolute URI")
        }
        guard !forbiddenSchemes.contains(scheme) else { throw .redirect("\(scheme): URIs cannot be redirect URIs") }
        guard components.fragment == nil, !uri.contains("#") else { throw .redirect("redirect URIs must not contain a fragment") }
        guard components.user == nil, components.password == nil else { throw .redirect("redirect URIs must not contain credentials") }
        guard hasValidPort(uri, components) else { throw .redirect("\(uri) has an invalid port (1 to 65535)") }
        switch scheme {
        case "https":
            guard let host = components.host, !host.isEmpty else { throw .redirect("\(uri) has no host") }
        case "http":
            guard let host = components.host?.lowercased(), loopbackHosts.contains(host) || loopbackHosts.contains("[\(host)]") else {
                throw .redirect("http redirect URIs are allowed only for loopback hosts (127.0.0.1, [::1], localhost)")
            }
        default:
            guard applicationType == "native" else {
                throw .redirect("custom-scheme redirect URIs (\(scheme):) require application_type \"native\"")
            }
            // RFC 8252 §7.1: private-use schemes are reverse domain names.
            guard scheme.contains(".") else {
                throw .redirect("custom schemes must be reverse domain names, e.g. com.example.app:/callback")
            }
        }
    }

    /// The authority's port, when one is written, is a number from 1 to 65535 (an empty `host:`
    /// port, `:0` or `:99999` is refused: browsers and servers read those differently).
    static func hasValidPort(_ uri: String, _ components: URLComponents) -> Bool {
        guard let schemeEnd = uri.range(of: "://") else { return true }
        let rest = uri[schemeEnd.upperBound...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        let hostAndPort = authority.split(separator: "@").last.map(String.init) ?? String(authority)
        let afterHost = hostAndPort.hasPrefix("[") ? hostAndPort.split(separator: "]", maxSplits: 1).dropFirst().first.map(String.init) ?? "" : hostAndPort
        guard let colon = afterHost.firstIndex(of: ":") else { return true }
        let digits = afterHost[afterHost.index(after: colon)...]
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let port = Int(digits), (1...65535).contains(port) else { return false }
        return components.port == port
    }

    /// Whether `presented` matches a registered redirect URI: exactly, except that for loopback
    /// http URIs the port may differ (RFC 8252 §7.3).
    public static func matches(presented: String, registered: [String]) -> Bool {
        if registered.contains(presented) { return true }
        guard let candidate = URLComponents(string: presented), hasValidPort(presented, candidate), candidate.scheme == "http",
              let host = candidate.host?.lowercased(), loopbackHosts.contains(host) || loopbackHosts.contains("[\(host)]")
        else { return false }
        return registered.contains { uri in
            guard var stored = URLComponents(string: uri), stored.scheme == "http", stored.host?.lowercased() == host else { return false }
            var presentedWithoutPort = candidate
            presentedWithoutPort.port = nil
            stored.port = nil
            return stored.string == presentedWithoutPort.string
        }
    }
}
