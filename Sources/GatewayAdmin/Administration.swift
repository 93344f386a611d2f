public import AuthorizationServer
package import GatewayAuth
import Foundation
public import GatewayStore
public import GatewayConfig

/// What an operator does to the gateway's state: list and revoke clients, list and end sessions,
/// list users and revoke everything a user holds. Shared by `mcp-gateway admin` (another process,
/// on the same store) and the `/admin` page (in the gateway).
public struct Administration: Sendable {
    let registry: ClientRegistry
    let refreshTokens: RefreshTokens
    let accessTokens: AccessTokens
    let users: UserDirectory
    let sessions: SessionBindings

    /// The same parts the gateway builds from `configuration`, on `store`.
    public init(configuration: GatewayConfiguration, store: any KeyValueStore) {
        let auth = configuration.auth ?? AuthConfiguration()
        let registry = ClientRegistry(store: store, settings: .init(
            rateLimitPerMinute: auth.registration.rateLimit, unusedClientTTL: auth.registration.unusedClientTTL,
            globalRateLimitPerMinute: auth.registration.globalRateLimit
        ))
        let keys = KeyManager(store: store, settings: .init(
            algorithm: auth.signing.algorithm == .rs256 ? .rs256 : .es256, rotationInterval: auth.signing.rotationInterval.timeInterval,
            maxTokenLifetime: auth.longestAccessTokenTTL.timeInterval + AccessTokens.clockSkew
        ))
        self.init(
            registry: registry, refreshTokens: RefreshTokens(store: store, lifetime: auth.refreshTokenTTL),
            accessTokens: AccessTokens(issuer: configuration.publicURL.origin, lifetime: auth.accessTokenTTL, longestLifetime: auth.longestAccessTokenTTL, keys: keys, store: store),
            users: UserDirectory(store: store, lifetime: auth.refreshTokenTTL), sessions: SessionBindings(store: store)
        )
    }

    package init(registry: ClientRegistry, refreshTokens: RefreshTokens, accessTokens: AccessTokens, users: UserDirectory, sessions: SessionBindings) {
        self.registry = registry
        self.refreshTokens = refreshTokens
        self.accessTokens = accessTokens
        self.users = users
        self.sessions = sessions
    }

    /// A registered client, without its secrets (only their hashes exist anyway).
    public struct ClientSummary: Sendable, Codable, Equatable {
        public let clientID: String
        public let clientName: String?
        /// Unix seconds.
        public let issuedAt: Int
        public let redirectURIs: [String]
        public let grantTypes: [String]
        public let tokenEndpointAuthMethod: String
        public let confidential: Bool
    }

    public struct SessionSummary: Sendable, Codable, Equatable {
        /// The SHA-256 of the session id; its first 16 characters are the audit log's `session`.
        public let session: String
        public let router: String
        public let subject: String?
        public let expiresInSeconds: Int
    }

    public enum Failure: Error, CustomStringConvertible {
        case store(String)

        public var description: String {
            switch self {
            case .store(let detail): "the store cannot be used: \(detail)"
            }
        }
    }

    // MARK: clients

    public func clients() async throws(Failure) -> [ClientSummary] {
        do { return try await registry.list().map(Self.summary) } catch { throw .store("\(error)") }
    }

    public func client(_ clientID: String) async throws(Failure) -> ClientSummary? {
        do { return try await registry.load(clientID).map(Self.summary) } catch { throw .store("\(error)") }
    }

    /// Deletes the client as RFC 7592 DELETE would: its refresh tokens stop at once, its access
    /// tokens within the token cache's seconds. False when there is no such client.
    public func revokeClient(_ clientID: String) async throws(Failure) -> Bool {
        do {
            guard let record = try await registry.load(clientID) else { return false }
            try await refreshTokens.revokeAll(clientID: clientID)
            try await accessTokens.revokeAll(clientID: clientID)
            try await registry.delete(record)
            return true
        } catch {
            throw .store("\(error)")
        }
    }

    static func summary(_ record: ClientRecord) -> ClientSummary {
        ClientSummary(
            clientID: record.clientID, clientName: record.metadata.client_name, issuedAt: record.issuedAt, redirectURIs: record.metadata.redirect_uris,
            grantTypes: record.metadata.grant_types, tokenEndpointAuthMethod: record.metadata.token_endpoint_auth_method.rawValue,
            confidential: record.clientSecretHash != nil
        )
    }

    // MARK: sessions

    public func sessionList() async throws(Failure) -> [SessionSummary] {
        do {
            return try await sessions.list().map {
                SessionSummary(session: $0.hash, router: $0.router, subject: $0.subject, expiresInSeconds: $0.expiresIn)
            }
        } catch {
            throw .store("\(error)")
        }
    }

    /// Ends a session by its id or its hash; every instance refuses it within seconds, and the
    /// client starts a new one.
    public func endSession(_ idOrHash: String) async throws(Failure) -> Bool {
        do { return try await sessions.end(idOrHash: idOrHash) } catch { throw .store("\(error)") }
    }

    // MARK: users

    public func userList() async throws(Failure) -> [UserDirectory.UserRecord] {
        do { return try await users.list() } catch { throw .store("\(error)") }
    }

    /// Every refresh-token family of the user revoked (and with them the access tokens); returns
    /// how many sign-ins were revoked.
    public func revokeUser(_ login: String) async throws(Failure) -> Int {
        do { return try await users.revokeAll(login: login, refreshTokens: refreshTokens) } catch { throw .store("\(error)") }
    }
}
