import Foundation
import GatewayStore

/// A client as the authorization and token endpoints see it, whether registered (RFC 7591) or
/// described by a Client ID Metadata Document.
public struct ResolvedClient: Sendable {
    public enum Origin: Sendable {
        case registered(ClientRecord)
        /// Fetched from the client id URL, or pinned in gateway.yaml.
        case metadataDocument(pinned: Bool)
    }

    public var clientID: String
    public var metadata: ClientMetadata
    public var clientSecretHash: String?
    public var origin: Origin

    public var isMetadataDocument: Bool {
        if case .metadataDocument = origin { return true }
        return false
    }
}

public enum ClientLookupError: Error, Sendable, Equatable {
    /// The client id names a metadata document that could not be used; the text says why.
    case unusableDocument(String)
    case storeUnavailable(String)
}

/// Where Client ID Metadata Documents come from (an HTTPS fetcher with caching and pins).
public protocol ClientMetadataDocumentSource: Sendable {
    /// The validated document for `clientID`, or nil when documents are disabled.
    func metadata(for clientID: String) async throws(ClientLookupError) -> (ClientMetadata, pinned: Bool)?
}

/// Resolves `client_id`s: https URLs with a path are Client ID Metadata Documents, everything else
/// is looked up among registered clients.
public struct ClientDirectory: Sendable {
    let registry: ClientRegistry
    let documents: (any ClientMetadataDocumentSource)?
    /// The gateway's own clients (the admin page), by id: not registrable, not in the store.
    let builtIn: [String: ClientMetadata]

    public init(registry: ClientRegistry, documents: (any ClientMetadataDocumentSource)?, builtIn: [String: ClientMetadata] = [:]) {
        self.registry = registry
        self.documents = documents
        self.builtIn = builtIn
    }

    public static func isMetadataDocumentURL(_ clientID: String) -> Bool {
        guard clientID.hasPrefix("https://"), let components = URLComponents(string: clientID), components.host?.isEmpty == false else { return false }
        return !components.path.isEmpty && components.path != "/" && components.fragment == nil && components.user == nil
    }

    /// Nil when no such client exists.
    public func resolve(_ clientID: String) async throws(ClientLookupError) -> ResolvedClient? {
        guard !clientID.isEmpty, clientID.utf8.count <= 2048 else { return nil }
        if let metadata = builtIn[clientID] {
            return ResolvedClient(clientID: clientID, metadata: metadata, clientSecretHash: nil, origin: .metadataDocument(pinned: true))
        }
        if Self.isMetadataDocumentURL(clientID) {
            guard let documents, let (metadata, pinned) = try await documents.metadata(for: clientID) else { return nil }
            return ResolvedClient(clientID: clientID, metadata: metadata, clientSecretHash: nil, origin: .metadataDocument(pinned: pinned))
        }
        let record: ClientRecord?
        do { record = try await registry.load(clientID) } catch {
            if case .storeUnavailable(let detail) = error { throw .storeUnavailable(detail) }
            throw .storeUnavailable("\(error)")
        }
        guard let record else { return nil }
        return ResolvedClient(clientID: clientID, metadata: record.metadata, clientSecretHash: record.clientSecretHash, origin: .registered(record))
    }
}

extension ClientMetadataValidator {
    /// Validates a Client ID Metadata Document fetched from (or pinned for) `url`: its `client_id`
    /// must be the URL itself, and it can only describe a public client (there is no shared secret).
    public static func validateDocument(_ json: [String: Any], url: String) throws(RegistrationError) -> ClientMetadata {
        guard let clientID = json["client_id"] as? String, clientID == url else {
            throw .metadata("the document's client_id must equal its URL \(url)")
        }
        var fields = json
        fields["client_id"] = nil
        let method = (fields["token_endpoint_auth_method"] as? String) ?? "none"
        guard method == "none" || method == "private_key_jwt" else {
            throw .metadata("token_endpoint_auth_method \(method) is not supported for metadata documents; use none or private_key_jwt")
        }
        // A private_key_jwt client names its keys; it may also sign in as a public client (PKCE),
        // so a document is usable either way.
        var jwksURI: String?, jwks: String?
        if method == "private_key_jwt" {
            if let uri = json["jwks_uri"] as? String {
                guard uri.utf8.count <= 2048, URLComponents(string: uri)?.scheme?.lowercased() == "https", URLComponents(string: uri)?.host?.isEmpty == false else {
                    throw .metadata("jwks_uri must be an https URL")
                }
                jwksURI = uri
            } else if let set = json["jwks"] as? [String: Any], let keys = set["keys"] as? [Any], !keys.isEmpty, keys.count <= 20,
                      let data = try? JSONSerialization.data(withJSONObject: set), data.count <= 16 * 1024
            {
                jwks = String(decoding: data, as: UTF8.self)
            } else {
                throw .metadata("a private_key_jwt document needs jwks_uri or jwks (with at most 20 keys)")
            }
        }
        fields["token_endpoint_auth_method"] = "none"
        if fields["grant_types"] == nil { fields["grant_types"] = ["authorization_code", "refresh_token"] }
        // Documents may carry fields this gateway does not keep (jwks, logo_uri on other hosts…):
        // keep only what registration validates.
        let kept: Set<String> = [
            "redirect_uris", "token_endpoint_auth_method", "grant_types", "response_types", "client_name", "scope",
            "contacts", "software_id", "software_version", "application_type", "client_uri",
        ]
        fields = fields.filter { kept.contains($0.key) }
        if let uri = fields["client_uri"] as? String, !uri.hasPrefix("https://") { fields["client_uri"] = nil }
        var metadata = try validate(fields)
        if method == "private_key_jwt" {
            metadata.token_endpoint_auth_method = .privateKeyJWT
            metadata.jwks_uri = jwksURI
            metadata.jwks = jwks
        }
        return metadata
    }
}
