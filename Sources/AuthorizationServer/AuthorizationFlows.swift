import Foundation
public import GatewayStore

/// A validated authorization request (RFC 6749 §4.1.1 + PKCE + RFC 8707), waiting for consent
/// and sign-in.
public struct AuthorizationRequest: Codable, Sendable, Equatable {
    public var clientID: String
    public var clientName: String?
    public var redirectURI: String
    public var state: String?
    public var codeChallenge: String
    public var scope: String
    public var resource: String

    public init(clientID: String, clientName: String?, redirectURI: String, state: String?, codeChallenge: String, scope: String, resource: String) {
        self.clientID = clientID
        self.clientName = clientName
        self.redirectURI = redirectURI
        self.state = state
        self.codeChallenge = codeChallenge
        self.scope = scope
        self.resource = resource
    }
}

/// A request between `/authorize` and the end of sign-in, bound to the browser that started it
/// (hash of a cookie value) and to the consent form (CSRF token).
public struct PendingAuthorization: Codable, Sendable, Equatable {
    public var request: AuthorizationRequest
    public var browserHash: String
    public var csrfToken: String
}

/// Pending authorizations and GitHub login states in the store. Both are single use: consuming
/// one is an atomic GETDEL, so a replayed consent or callback finds nothing.
public struct AuthorizationFlows: Sendable {
    public static let lifetime: Duration = .seconds(600)
    let store: any KeyValueStore

    public init(store: any KeyValueStore) {
        self.store = store
    }

    public func begin(_ request: AuthorizationRequest, browserSecret: String) async throws(StoreError) -> (id: String, pending: PendingAuthorization) {
        let id = ClientRegistry.randomToken(bytes: 24)
        let pending = PendingAuthorization(request: request, browserHash: ClientRegistry.hash(browserSecret), csrfToken: ClientRegistry.randomToken(bytes: 24))
        try await put("authreq:\(ClientRegistry.hash(id))", pending)
        return (id, pending)
    }

    public func load(_ id: String) async throws(StoreError) -> PendingAuthorization? {
        decode(try await store.get("authreq:\(ClientRegistry.hash(id))"))
    }

    public func take(_ id: String) async throws(StoreError) -> PendingAuthorization? {
        decode(try await store.take("authreq:\(ClientRegistry.hash(id))"))
    }

    /// Hands the request to an external sign-in (GitHub) under a fresh single-use state value.
    public func beginLogin(_ pending: PendingAuthorization) async throws(StoreError) -> String {
        let state = ClientRegistry.randomToken(bytes: 24)
        try await put("login:\(ClientRegistry.hash(state))", pending)
        return state
    }

    public func takeLogin(_ state: String) async throws(StoreError) -> PendingAuthorization? {
        decode(try await store.take("login:\(ClientRegistry.hash(state))"))
    }

    /// Whether the browser presenting `secret` is the one that started the request.
    public static func isSameBrowser(_ pending: PendingAuthorization, secret: String?) -> Bool {
        guard let secret, !secret.isEmpty else { return false }
        return ClientRegistry.constantTimeEqual(pending.browserHash, ClientRegistry.hash(secret))
    }

    private func put(_ key: String, _ pending: PendingAuthorization) async throws(StoreError) {
        let bytes: [UInt8]
        do { bytes = Array(try JSONEncoder().encode(pending)) } catch { throw .rejected("cannot encode the authorization request") }
        try await store.set(key, bytes, ttl: Self.lifetime)
    }

    private func decode(_ bytes: [UInt8]?) -> PendingAuthorization? {
        guard let bytes else { return nil }
        return try? JSONDecoder().decode(PendingAuthorization.self, from: Data(bytes))
    }
}
