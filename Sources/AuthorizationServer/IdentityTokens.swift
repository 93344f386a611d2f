public import Foundation
import Synchronization

/// The claims of a signed identity token: who an upstream request is for, signed with the
/// gateway's own keys (the JWKS at `/jwks.json`), for one upstream (`aud`, its URL). It carries no
/// `scope`, and its `typ` is `mcp-identity+jwt`, so it is never accepted as an access token.
public struct IdentityTokenClaims: Codable, Sendable, Equatable {
    public var iss: String
    public var sub: String
    public var aud: String
    public var exp: Int
    public var iat: Int
    public var nbf: Int
    public var jti: String
    public var login: String
    public var client_id: String
    public var router: String
}

/// Mints identity tokens (`services.<s>.http.identityToken`), each reused for half its lifetime:
/// one signature per caller, router and upstream every few minutes, not one per request.
public final class IdentityTokens: Sendable {
    public static let type = "mcp-identity+jwt"
    static let maxCached = 10_000

    let issuer: String
    let keys: KeyManager
    let now: @Sendable () -> Date
    private let cache = Mutex<[String: (token: String, reuseUntil: Int)]>([:])

    public init(issuer: String, keys: KeyManager, now: @escaping @Sendable () -> Date = { Date() }) {
        self.issuer = issuer
        self.keys = keys
        self.now = now
    }

    /// A token for `subject`'s request through `router` to the upstream at `audience`; nil when no
    /// signing key can be had (the store is down): the request then goes without one, and an
    /// upstream that requires it refuses.
    public func token(subject: String, login: String, clientID: String, router: String, audience: String, ttl: Duration) async -> String? {
        let issuedAt = Int(now().timeIntervalSince1970)
        let cacheKey = [subject, clientID, router, audience].joined(separator: "\u{0}")
        if let cached = cache.withLock({ $0[cacheKey] }), cached.reuseUntil > issuedAt { return cached.token }
        guard let ring = try? await keys.current(), let key = ring.current else { return nil }
        let lifetime = max(1, Int(ttl.components.seconds))
        let claims = IdentityTokenClaims(
            iss: issuer, sub: subject, aud: audience, exp: issuedAt + lifetime, iat: issuedAt, nbf: issuedAt,
            jti: ClientRegistry.randomToken(bytes: 12), login: login, client_id: clientID, router: router
        )
        guard let token = try? JWT.sign(claims, with: key, type: Self.type) else { return nil }
        cache.withLock { cache in
            if cache.count >= Self.maxCached { cache = cache.filter { $0.value.reuseUntil > issuedAt } }
            if cache.count < Self.maxCached { cache[cacheKey] = (token, issuedAt + lifetime / 2) }
        }
        return token
    }
}
