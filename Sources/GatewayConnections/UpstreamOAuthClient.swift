public import AsyncHTTPClient
import Foundation
public import GatewayConfig
public import GatewayStore
public import Logging
import AuthorizationServer
import GatewayAuth
import NIOCore
import NIOHTTP1
import NIOFoundationEssentialsCompat
import Synchronization

/// The gateway as an MCP OAuth client of a protected upstream (the MCP authorization spec):
/// the upstream's protected-resource metadata (RFC 9728, found from its 401's
/// `WWW-Authenticate`, else at the well-known path), its authorization server's metadata
/// (RFC 8414, else OpenID discovery), the client the gateway is there (a configured client id,
/// else the gateway's Client ID Metadata Document when the server supports it and the gateway
/// is on https, else dynamic registration (RFC 7591), kept in the store per issuer), PKCE S256,
/// `resource` = the upstream; the code exchange, refresh and revocation.
public final class UpstreamOAuthClient: Sendable {
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let description: String
        /// The authorization server answered `invalid_grant` (the grant is gone).
        public var refused = false

        init(_ description: String, refused: Bool = false) {
            self.description = description
            self.refused = refused
        }
    }

    /// What discovery found for a service.
    public struct Discovery: Sendable {
        public let resource: String
        public let issuer: String
        public let authorizationEndpoint: String
        public let tokenEndpoint: String
        public let registrationEndpoint: String?
        public let revocationEndpoint: String?
        public let metadataDocumentsSupported: Bool
        public let scopesSupported: [String]
    }

    /// The client the gateway is at one authorization server.
    public struct ClientIdentity: Codable, Sendable {
        public let clientID: String
        public let clientSecret: String?
    }

    let http: HTTPClient
    let store: any KeyValueStore
    let logger: Logger
    /// Seals the registrations kept in the store (a server may hand out a client secret).
    let keys: @Sendable () -> StoreKeys?
    private let discoveries = Mutex<[String: (Discovery, ContinuousClock.Instant)]>([:])
    static let discoveryLifetime: Duration = .seconds(600)
    static let maxDocument = 256 * 1024

    public init(http: HTTPClient, store: any KeyValueStore, logger: Logger, keys: @escaping @Sendable () -> StoreKeys? = { nil }) {
        self.http = http
        self.store = store
        self.logger = logger
        self.keys = keys
    }

    /// The registration made at an authorization server, as kept in the store (sealed). One
    /// sealed under a previous key is sealed again under the current one as it is read.
    private func storedRegistration(_ key: String) async -> ClientIdentity? {
        guard let raw = try? await store.get(key), let keys = keys() else { return nil }
        let sealer = SecretSealer(keys: keys)
        let text = String(decoding: raw, as: UTF8.self)
        guard let plain = try? sealer.open(text, context: key), let identity = try? JSONDecoder().decode(ClientIdentity.self, from: Data(plain)) else { return nil }
        if SecretSealer.keyID(of: text) != sealer.currentKeyID { await keepRegistration(identity, key: key) }
        return identity
    }

    private func keepRegistration(_ identity: ClientIdentity, key: String) async {
        guard let keys = keys(), let encoded = try? JSONEncoder().encode(identity),
              let sealed = try? SecretSealer(keys: keys).seal(Array(encoded), context: key)
        else { return }
        try? await store.set(key, Array(sealed.utf8), ttl: nil)
        try? await store.addToSet(Self.registrationIndexKey, [key], ttl: nil)
    }

    /// The keys of the registrations kept (for `admin rotate-store-key`).
    static let registrationIndexKey = "upstream-clients"

    /// Seals every kept registration again under the current key (`admin rotate-store-key`):
    /// how many were resealed, already under it, and the ones no configured key opens (left as
    /// they are; the next connection registers again).
    public static func resealRegistrations(store: any KeyValueStore, keys: StoreKeys) async throws(StoreError) -> (resealed: Int, unchanged: Int, failed: [String]) {
        // A registration is sealed under its own store key as context.
        let index = SealedRecordIndex(store: store, indexKey: registrationIndexKey, record: { key in (key, key) }, name: { String($0.suffix(12)) })
        return try await index.reseal(with: SecretSealer(keys: keys))
    }

    static func registrationKey(issuer: String, publicURL: PublicURL) -> String {
        "upstream-client:\(ClientRegistry.hash(issuer + "|" + redirectURI(publicURL: publicURL)))"
    }

    /// The CIMD URL and redirect URI of this gateway.
    public static func metadataDocumentURL(publicURL: PublicURL) -> String { publicURL.origin + "/.well-known/mcp-gateway-client.json" }
    public static func redirectURI(publicURL: PublicURL) -> String { publicURL.origin + "/connect/callback" }

    /// The gateway's Client ID Metadata Document.
    public static func metadataDocument(publicURL: PublicURL) -> [String: Any] {
        var document: [String: Any] = [
            "client_id": metadataDocumentURL(publicURL: publicURL), "client_name": "mcp-gateway at \(publicURL.host)",
            "redirect_uris": [redirectURI(publicURL: publicURL)], "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        ]
        // Authorization servers take only https home pages.
        if publicURL.scheme == "https" { document["client_uri"] = publicURL.origin }
        return document
    }

    // MARK: discovery

    public func discover(_ service: HTTPServiceConfiguration) async throws(Failure) -> Discovery {
        let now = ContinuousClock.now
        let cacheKey = service.name + "\u{0}" + service.url + "\u{0}" + (service.oauth?.authorizationServer ?? "")
        if let (cached, at) = discoveries.withLock({ $0[cacheKey] }), now - at < Self.discoveryLifetime { return cached }
        guard let settings = service.oauth else { throw Failure("\(service.name) has no oauth settings") }
        var resource = service.url
        var scopes: [String] = []
        var issuer = settings.authorizationServer
        if issuer == nil {
            let metadataURL = try await resourceMetadataURL(service)
            let prm = try await fetchJSON(metadataURL, what: "protected-resource metadata")
            guard let servers = prm["authorization_servers"] as? [String], let first = servers.first else {
                throw Failure("the upstream's protected-resource metadata names no authorization server")
            }
            issuer = first
            if let named = prm["resource"] as? String, !named.isEmpty { resource = named }
            scopes = prm["scopes_supported"] as? [String] ?? []
        }
        guard let issuer else { throw Failure("no authorization server") }
        let metadata = try await authorizationServerMetadata(issuer)
        guard let authorize = metadata["authorization_endpoint"] as? String, let token = metadata["token_endpoint"] as? String else {
            throw Failure("the authorization server's metadata lacks authorization_endpoint or token_endpoint")
        }
        if let methods = metadata["code_challenge_methods_supported"] as? [String], !methods.contains("S256") {
            throw Failure("the authorization server does not support PKCE S256")
        }
        for endpoint in [authorize, token] where !Self.acceptable(endpoint, beside: service.url) {
            throw Failure("the authorization server's endpoint \(endpoint) is not https")
        }
        let discovery = Discovery(
            resource: resource, issuer: (metadata["issuer"] as? String) ?? issuer, authorizationEndpoint: authorize, tokenEndpoint: token,
            registrationEndpoint: metadata["registration_endpoint"] as? String, revocationEndpoint: metadata["revocation_endpoint"] as? String,
            metadataDocumentsSupported: metadata["client_id_metadata_document_supported"] as? Bool ?? false,
            scopesSupported: scopes.isEmpty ? (metadata["scopes_supported"] as? [String] ?? []) : scopes
        )
        discoveries.withLock { $0[cacheKey] = (discovery, now) }
        return discovery
    }

    /// Endpoints are https, unless the upstream itself is plain http (an operator's choice, e.g. on
    /// a private network).
    static func acceptable(_ endpoint: String, beside upstream: String) -> Bool {
        guard let scheme = URLComponents(string: endpoint)?.scheme?.lowercased() else { return false }
        return scheme == "https" || (scheme == "http" && upstream.lowercased().hasPrefix("http://"))
    }

    /// From the upstream's 401 (`WWW-Authenticate: Bearer resource_metadata="…"`), else the
    /// well-known URL for the upstream's path, else at its root.
    func resourceMetadataURL(_ service: HTTPServiceConfiguration) async throws(Failure) -> String {
        var request = HTTPClientRequest(url: service.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json, text/event-stream")
        request.headers.add(name: "MCP-Protocol-Version", value: "2025-11-25")
        request.body = .bytes(ByteBuffer(string: #"{"jsonrpc":"2.0","id":"mcpgw-discovery","method":"ping"}"#))
        if let response = try? await http.execute(request, timeout: .seconds(10), logger: Logger.forHTTPClient) {
            _ = try? await response.body.collect(upTo: 64 * 1024)
            for challenge in response.headers["WWW-Authenticate"] {
                if let url = Self.parameter("resource_metadata", in: challenge) { return url }
            }
        }
        guard let components = URLComponents(string: service.url), let scheme = components.scheme, let host = components.host else {
            throw Failure("the upstream URL cannot be read")
        }
        let origin = "\(scheme)://\(host)" + (components.port.map { ":\($0)" } ?? "")
        let path = components.path == "/" ? "" : components.path
        return origin + "/.well-known/oauth-protected-resource" + path
    }

    /// A quoted or bare auth-param of a challenge.
    package static func parameter(_ name: String, in challenge: String) -> String? {
        guard let range = challenge.range(of: name + "=", options: .caseInsensitive) else { return nil }
        var rest = challenge[range.upperBound...]
        if rest.hasPrefix("\"") {
            rest = rest.dropFirst()
            guard let end = rest.firstIndex(of: "\"") else { return nil }
            return String(rest[..<end])
        }
        return String(rest.prefix { $0 != "," && $0 != " " })
    }

    func authorizationServerMetadata(_ issuer: String) async throws(Failure) -> [String: Any] {
        guard let components = URLComponents(string: issuer), let scheme = components.scheme, let host = components.host else {
            throw Failure("\(issuer) is not an issuer URL")
        }
        let origin = "\(scheme)://\(host)" + (components.port.map { ":\($0)" } ?? "")
        let path = components.path == "/" ? "" : components.path
        var lastError = Failure("no metadata")
        for url in [origin + "/.well-known/oauth-authorization-server" + path, origin + "/.well-known/openid-configuration" + path, issuer + "/.well-known/openid-configuration"] {
            let metadata: [String: Any]
            do { metadata = try await fetchJSON(url, what: "authorization-server metadata") } catch {
                lastError = error
                continue
            }
            // RFC 8414 §3.3: the issuer in the document is the one asked for.
            if let named = metadata["issuer"] as? String, Self.trimmed(named) != Self.trimmed(issuer) {
                throw Failure("the metadata at \(url) names issuer \(named), not \(issuer)")
            }
            return metadata
        }
        throw lastError
    }

    static func trimmed(_ url: String) -> String { url.hasSuffix("/") ? String(url.dropLast()) : url }

    /// An issuer as compared (RFC 9207 `iss` against the one asked).
    public static func trimmedIssuer(_ url: String) -> String { trimmed(url) }

    func fetchJSON(_ url: String, what: String) async throws(Failure) -> [String: Any] {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        do {
            let response = try await http.execute(request, timeout: .seconds(10), logger: Logger.forHTTPClient)
            let body = try await response.body.collect(upTo: Self.maxDocument)
            guard response.status == .ok else { throw Failure("\(what) at \(url): HTTP \(response.status.code)") }
            guard let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else { throw Failure("\(what) at \(url) is not a JSON object") }
            return object
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure("\(what) at \(url) cannot be read: \(error)")
        }
    }

    // MARK: the client at the authorization server

    /// The configured client, else the metadata document (https gateways, servers that support
    /// it), else a registration made once per issuer and kept in the store.
    public func client(for discovery: Discovery, settings: UpstreamOAuthSettings, publicURL: PublicURL) async throws(Failure) -> ClientIdentity {
        if let id = settings.clientID { return ClientIdentity(clientID: id, clientSecret: settings.clientSecret) }
        if discovery.metadataDocumentsSupported, publicURL.scheme == "https" {
            return ClientIdentity(clientID: Self.metadataDocumentURL(publicURL: publicURL), clientSecret: nil)
        }
        let key = Self.registrationKey(issuer: discovery.issuer, publicURL: publicURL)
        if let identity = await storedRegistration(key) { return identity }
        guard let endpoint = discovery.registrationEndpoint else {
            throw Failure("the authorization server \(discovery.issuer) offers neither Client ID Metadata Documents (for an https publicURL) nor dynamic registration: set oauth.clientID")
        }
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        var metadata = Self.metadataDocument(publicURL: publicURL)
        metadata["client_id"] = nil
        if !settings.scopes.isEmpty { metadata["scope"] = settings.scopes.joined(separator: " ") }
        guard let body = try? JSONSerialization.data(withJSONObject: metadata) else { throw Failure("registration request") }
        request.body = .bytes(ByteBuffer(data: body))
        let object: [String: Any]
        do {
            let response = try await http.execute(request, timeout: .seconds(10), logger: Logger.forHTTPClient)
            let bytes = try await response.body.collect(upTo: Self.maxDocument)
            let answer = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any]
            guard (200..<300).contains(response.status.code), let parsed = answer else {
                let reason = [answer?["error"] as? String, answer?["error_description"] as? String].compactMap { $0 }.joined(separator: ": ")
                throw Failure("dynamic registration at \(endpoint) was refused (HTTP \(response.status.code)\(reason.isEmpty ? "" : ", " + reason))")
            }
            object = parsed
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure("dynamic registration at \(endpoint) failed: \(error)")
        }
        guard let clientID = object["client_id"] as? String else { throw Failure("the registration answer has no client_id") }
        let identity = ClientIdentity(clientID: clientID, clientSecret: object["client_secret"] as? String)
        await keepRegistration(identity, key: key)
        logger.info("registered at the upstream's authorization server", metadata: ["issuer": "\(discovery.issuer)"])
        return identity
    }

    public func authorizationURL(discovery: Discovery, client: ClientIdentity, settings: UpstreamOAuthSettings, publicURL: PublicURL, state: String, verifier: String) -> String {
        let scopes = settings.scopes
        return FormEncoding.appending([
            ("response_type", "code"), ("client_id", client.clientID), ("redirect_uri", Self.redirectURI(publicURL: publicURL)),
            ("code_challenge", PKCE.challenge(for: verifier)), ("code_challenge_method", "S256"), ("state", state),
            ("resource", discovery.resource), ("scope", scopes.isEmpty ? nil : scopes.joined(separator: " ")),
        ], to: discovery.authorizationEndpoint)
    }

    // MARK: tokens

    public func exchange(code: String, verifier: String, discovery: Discovery, client: ClientIdentity, publicURL: PublicURL) async throws(Failure) -> UpstreamGrant {
        let object = try await tokenRequest(discovery.tokenEndpoint, client: client, form: [
            ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", Self.redirectURI(publicURL: publicURL)),
            ("code_verifier", verifier), ("resource", discovery.resource),
        ])
        var grant = try Self.grant(from: object, previous: nil)
        grant.issuer = discovery.issuer
        grant.tokenEndpoint = discovery.tokenEndpoint
        grant.revocationEndpoint = discovery.revocationEndpoint
        grant.clientID = client.clientID
        grant.resource = discovery.resource
        return grant
    }

    public func refresh(_ grant: UpstreamGrant, clientSecret: String?) async -> ConnectionVault.RefreshOutcome {
        guard let refreshToken = grant.refreshToken, let endpoint = grant.tokenEndpoint, let clientID = grant.clientID else { return .refused }
        do {
            let object = try await tokenRequest(endpoint, client: ClientIdentity(clientID: clientID, clientSecret: clientSecret), form: [
                ("grant_type", "refresh_token"), ("refresh_token", refreshToken), ("resource", grant.resource),
            ])
            var next = try Self.grant(from: object, previous: grant)
            next.refreshedAt = Date()
            return .refreshed(next)
        } catch {
            logger.notice("refreshing an upstream token failed", metadata: ["issuer": "\(grant.issuer ?? "")", "detail": "\(error.description)"])
            return error.refused ? .refused : .unavailable
        }
    }

    /// Best effort (RFC 7009): the refresh token, then the access token.
    public func revoke(_ grant: UpstreamGrant, clientSecret: String?) async {
        guard let endpoint = grant.revocationEndpoint, let clientID = grant.clientID else { return }
        for (token, hint) in [(grant.refreshToken, "refresh_token"), (grant.accessToken, "access_token")] {
            guard let token else { continue }
            _ = try? await tokenRequest(endpoint, client: ClientIdentity(clientID: clientID, clientSecret: clientSecret), form: [("token", token), ("token_type_hint", hint)], expectJSON: false)
        }
    }

    /// The client's secret for a grant: configured, or from the stored registration.
    public func clientSecret(for grant: UpstreamGrant, settings: UpstreamOAuthSettings, publicURL: PublicURL) async -> String? {
        if let id = settings.clientID, id == grant.clientID { return settings.clientSecret }
        guard let issuer = grant.issuer, let identity = await storedRegistration(Self.registrationKey(issuer: issuer, publicURL: publicURL)),
              identity.clientID == grant.clientID
        else { return nil }
        return identity.clientSecret
    }

    private func tokenRequest(_ endpoint: String, client: ClientIdentity, form: [(String, String?)], expectJSON: Bool = true) async throws(Failure) -> [String: Any] {
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        var fields = form
        if let secret = client.clientSecret {
            let credentials = "\(FormEncoding.escape(client.clientID)):\(FormEncoding.escape(secret))"
            request.headers.add(name: "Authorization", value: "Basic " + Data(credentials.utf8).base64EncodedString())
        } else {
            fields.append(("client_id", client.clientID))
        }
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(fields)))
        // The token endpoint's answers hold secrets: the HTTP client logs nothing of them.
        let quiet = Logger.forHTTPClient
        do {
            let response = try await http.execute(request, timeout: .seconds(15), logger: quiet)
            let bytes = try await response.body.collect(upTo: Self.maxDocument)
            let object = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] ?? [:]
            guard (200..<300).contains(response.status.code) else {
                let code = object["error"] as? String ?? "HTTP \(response.status.code)"
                throw Failure("the authorization server answered \(code)", refused: code == "invalid_grant" || code == "invalid_client" || code == "unauthorized_client")
            }
            return object
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure("the authorization server cannot be reached: \(error)")
        }
    }

    package static func grant(from object: [String: Any], previous: UpstreamGrant?) throws(Failure) -> UpstreamGrant {
        guard let access = object["access_token"] as? String, !access.isEmpty else { throw Failure("the token answer has no access_token") }
        if let type = object["token_type"] as? String, type.lowercased() != "bearer" { throw Failure("token_type \(type) is not Bearer") }
        var grant = previous ?? UpstreamGrant(accessToken: access)
        grant.accessToken = access
        // A refresh answer without a new refresh token keeps the old one (RFC 6749 §6).
        if let refresh = object["refresh_token"] as? String { grant.refreshToken = refresh }
        if let seconds = (object["expires_in"] as? NSNumber)?.doubleValue { grant.expiresAt = Date().addingTimeInterval(seconds) } else if previous != nil { grant.expiresAt = nil }
        if let scope = object["scope"] as? String { grant.scope = scope }
        return grant
    }
}
