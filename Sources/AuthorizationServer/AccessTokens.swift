public import Foundation
public import GatewayStore

public enum TokenValidationError: Error, Sendable, Equatable {
    /// Not a token of this gateway, or tampered with, or expired, or revoked: the description is
    /// safe to show to the token's holder.
    case invalid(String)
    case storeUnavailable(String)
}

/// The gateway's access tokens: signed JWTs (RFC 9068 shape) bound to one resource (`aud`).
/// Revocation is recorded per token (`revoked-jti:<jti>`), per sign-in (`family-revoked:<fam>`,
/// shared with the refresh tokens) and per client (`client-revoked:<id>`, for RFC 7592 DELETE),
/// each kept only as long as a token could still be alive.
public struct AccessTokens: Sendable {
    public let issuer: String
    public let lifetime: Duration
    /// The longest any access token lives (`auth.clientOverrides` give some clients more).
    public let longestLifetime: Duration
    /// Tolerated clock difference between instances when checking `exp`/`iat`.
    public static let clockSkew: TimeInterval = 10
    let keys: KeyManager
    let store: any KeyValueStore
    let now: @Sendable () -> Date

    public init(issuer: String, lifetime: Duration, longestLifetime: Duration? = nil, keys: KeyManager, store: any KeyValueStore, now: @escaping @Sendable () -> Date = { Date() }) {
        self.issuer = issuer
        self.lifetime = lifetime
        self.longestLifetime = max(lifetime, longestLifetime ?? lifetime)
        self.keys = keys
        self.store = store
        self.now = now
    }

    public var lifetimeSeconds: Int { Int(lifetime.components.seconds) }

    /// `lifetime`: this token's, when not the default (`auth.clientOverrides`).
    /// `grantType`: recorded as `gty` for `client_credentials` tokens.
    public func issue(for grant: Grant, family: String? = nil, lifetime: Duration? = nil, grantType: String? = nil) async throws(TokenValidationError) -> String {
        let ring: KeyRing
        do { ring = try await keys.current() } catch { throw .storeUnavailable("\(error)") }
        guard let key = ring.current else { throw .storeUnavailable("no signing key") }
        let issuedAt = Int(now().timeIntervalSince1970)
        let claims = AccessTokenClaims(
            iss: issuer, sub: grant.user.subject, aud: grant.resource, exp: issuedAt + Int((lifetime ?? self.lifetime).components.seconds), iat: issuedAt,
            jti: ClientRegistry.randomToken(bytes: 16), client_id: grant.clientID, scope: grant.scope, login: grant.user.login, email: grant.user.email,
            nbf: issuedAt, fam: family, gty: grantType
        )
        do {
            return try JWT.sign(claims, with: key)
        } catch {
            throw .storeUnavailable("signing failed: \(error)")
        }
    }

    /// Signature, issuer, expiry, audience (when given) and revocation.
    public func validate(_ token: String, audience: String?) async throws(TokenValidationError) -> AccessTokenClaims {
        let ring: KeyRing
        do { ring = try await keys.current() } catch { throw .storeUnavailable("\(error)") }
        let claims = try checkSignatureAndClaims(token, ring: ring, audience: audience)
        do {
            if try await store.get("revoked-jti:\(claims.jti)") != nil { throw TokenValidationError.invalid("the access token was revoked") }
            if let family = claims.fam, try await store.get("family-revoked:\(family)") != nil {
                throw TokenValidationError.invalid("the sign-in this token belongs to was revoked")
            }
            if let revokedAt = try await store.getString("client-revoked:\(claims.client_id)"), let time = Int(revokedAt), claims.iat <= time {
                throw TokenValidationError.invalid("the client this token was issued to was deleted")
            }
        } catch let error as TokenValidationError {
            throw error
        } catch {
            throw .storeUnavailable("\(error)")
        }
        return claims
    }

    /// The checks that need no store: signature with a published key, issuer, time, audience.
    public func checkSignatureAndClaims(_ token: String, ring: KeyRing, audience: String?) throws(TokenValidationError) -> AccessTokenClaims {
        let claims: AccessTokenClaims
        do {
            claims = try JWT.verify(token, keys: ring, as: AccessTokenClaims.self, requiredType: "at+jwt")
        } catch {
            throw .invalid("the access token is not one this gateway issued")
        }
        let time = now().timeIntervalSince1970
        guard claims.iss == issuer else { throw .invalid("the access token was issued by another server") }
        guard TimeInterval(claims.exp) + Self.clockSkew > time else { throw .invalid("the access token expired") }
        guard TimeInterval(claims.iat) - Self.clockSkew <= time else { throw .invalid("the access token is not valid yet") }
        if let notBefore = claims.nbf, TimeInterval(notBefore) - Self.clockSkew > time { throw .invalid("the access token is not valid yet") }
        if let audience, claims.aud != audience {
            throw .invalid("the access token is for another resource (\(claims.aud))")
        }
        return claims
    }

    /// RFC 7009 for one token: remembered until it would have expired anyway.
    public func revoke(_ claims: AccessTokenClaims) async throws(StoreError) {
        let remaining = max(1, claims.exp - Int(now().timeIntervalSince1970) + Int(Self.clockSkew))
        try await store.set("revoked-jti:\(claims.jti)", "1", ttl: .seconds(remaining))
    }

    /// Every access token issued to the client so far stops working (RFC 7592 DELETE).
    /// The mark outlives every token it stops, those of `auth.clientOverrides` included.
    public func revokeAll(clientID: String) async throws(StoreError) {
        let time = Int(now().timeIntervalSince1970)
        let seconds = Int(longestLifetime.components.seconds)
        try await store.set("client-revoked:\(clientID)", String(time), ttl: .seconds(seconds + Int(Self.clockSkew) + 1))
    }
}
