package import AsyncHTTPClient
import AuthorizationServer
import Crypto
import Foundation
package import GatewayConfig
package import Logging
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import Synchronization

/// Access tokens of external issuers (`auth: jwt`, `auth.jwt.issuers`): Keycloak, Auth0, Entra,
/// Okta… The issuer is chosen by the token's `iss` among those configured; its keys come from its
/// JWKS (found by OpenID discovery unless `jwksURL` is given), fetched with a deadline, cached, and
/// fetched again for a key id not seen before at most once a minute (and hourly in any case).
/// Signatures are checked by JWTKit; only RS256, ES256 and EdDSA with a key of the matching type
/// are accepted (never `none`, never HMAC: a public key is no secret). `exp` is required; `nbf`,
/// `iss` and `aud` are enforced. The caller is `jwt:<issuer name>:<sub>` with the login taken
/// from `userClaim` and groups from `groupsClaim`, for allow-lists, policies and the audit log.
package final class ExternalTokens: Sendable {
    static let clockSkew: TimeInterval = 30
    static let fetchTimeout: TimeAmount = .seconds(5)
    static let refetchInterval: Duration = .seconds(60)
    static let maximumKeyAge: Duration = .seconds(3600)
    static let retryAfterFailure: Duration = .seconds(5)
    static let maximumBody = 512 * 1024
    static let cacheSeconds: TimeInterval = 5
    static let maximumCachedTokens = 10_000

    /// One JWKS as fetched.
    struct KeySet: Sendable {
        var keys: JOSEKeys
        var fetchedAt: ContinuousClock.Instant
        var types: [String: String] { keys.types }
    }

    /// A token whose signature was verified with the keys of `jwksURL`.
    struct Verified: Sendable {
        var jwksURL: String
        var payload: Payload
        var validUntil: Date
    }

    /// The claims the gateway reads, as JSON values.
    struct Payload: Sendable {
        var issuer: String?
        var subject: String?
        var audiences: [String]
        var expires: TimeInterval?
        var notBefore: TimeInterval?
        var issuedAt: TimeInterval?
        var tokenID: String?
        var clientID: String?
        var strings: [String: String]
        var lists: [String: [String]]

        init(_ object: [String: Any]) {
            issuer = object["iss"] as? String
            subject = object["sub"] as? String
            switch object["aud"] {
            case let single as String: audiences = [single]
            case let many as [Any]: audiences = many.compactMap { $0 as? String }
            default: audiences = []
            }
            expires = (object["exp"] as? NSNumber)?.doubleValue
            notBefore = (object["nbf"] as? NSNumber)?.doubleValue
            issuedAt = (object["iat"] as? NSNumber)?.doubleValue
            tokenID = object["jti"] as? String
            clientID = (object["azp"] as? String) ?? (object["client_id"] as? String)
            var strings: [String: String] = [:]
            var lists: [String: [String]] = [:]
            for (name, value) in object {
                switch value {
                case let text as String: strings[name] = text
                case let many as [Any]: lists[name] = many.compactMap { $0 as? String }
                default: break
                }
            }
            self.strings = strings
            self.lists = lists
        }
    }

    private let http: HTTPClient
    private let logger: Logger
    private let keySets = Mutex<[String: KeySet]>([:])
    /// When each JWKS URL was last fetched again for an unknown key id (or its hourly refresh),
    /// so made-up key ids cannot make the gateway fetch more than once a minute.
    private let lastFetch = Mutex<[String: ContinuousClock.Instant]>([:])
    private let failedAt = Mutex<[String: ContinuousClock.Instant]>([:])
    private let discovered = Mutex<[String: String]>([:])
    private let verified = Mutex<[SHA256.Digest: Verified]>([:])

    package init(http: HTTPClient, logger: Logger) {
        self.http = http
        self.logger = logger
    }

    /// Whether `token` claims to come from one of `issuers` (its unverified `iss`): the
    /// `Authentication` stage asks this to choose between this verifier and the gateway's own.
    package static func names(_ token: String, oneOf issuers: [JWTIssuer]) -> Bool {
        guard let payload = try? Self.parts(token).payload else { return false }
        return issuers.contains { $0.issuer == payload.issuer }
    }

    /// The caller `token` stands for on `route`, or why there is none.
    package func check(_ token: String, issuers: [JWTIssuer], route: some ProtectedRoute) async -> Result<VerifiedCaller, TokenCheckFailure> {
        let parts: (header: [String: Any], payload: Payload)
        do { parts = try Self.parts(token) } catch { return .failure(.invalidToken("the token is not a JWT")) }
        guard let algorithm = parts.header["alg"] as? String, let keyType = JOSEKeys.algorithms[algorithm] else {
            return .failure(.invalidToken("the token's algorithm is not accepted (RS256, ES256 or EdDSA)"))
        }
        guard let issuer = issuers.first(where: { $0.issuer == parts.payload.issuer }) else {
            return .failure(.invalidToken("the token's issuer is not trusted here"))
        }
        let keyID = parts.header["kid"] as? String
        let digest = SHA256.hash(data: Data(token.utf8))
        let now = Date()
        let payload: Payload
        let source: String
        do { source = try await jwksURL(for: issuer) } catch {
            logger.warning("cannot discover the keys of an external issuer", metadata: ["issuer": "\(issuer.name)", "error": "\(error)"])
            return .failure(.issuerKeysUnavailable)
        }
        if let cached = verified.withLock({ $0[digest] }), cached.validUntil > now, cached.jwksURL == source {
            payload = cached.payload
        } else {
            let keys: KeySet
            do { keys = try await keySet(source, issuer: issuer, keyID: keyID) } catch {
                logger.warning("cannot fetch the keys of an external issuer", metadata: ["issuer": "\(issuer.name)", "error": "\(error)"])
                return .failure(.issuerKeysUnavailable)
            }
            _ = keyType
            do { _ = try await keys.keys.verify(token) } catch {
                return .failure(.invalidToken(error.description))
            }
            payload = parts.payload
            let until = min(now.addingTimeInterval(Self.cacheSeconds), Date(timeIntervalSince1970: payload.expires ?? 0))
            verified.withLock { cache in
                if cache.count >= Self.maximumCachedTokens { cache = cache.filter { $0.value.validUntil > now } }
                if cache.count < Self.maximumCachedTokens { cache[digest] = Verified(jwksURL: source, payload: payload, validUntil: until) }
            }
        }
        return Self.caller(payload, issuer: issuer, route: route, now: now)
    }

    /// The claims checked against `issuer` as configured now, and the caller they make.
    static func caller(_ payload: Payload, issuer: JWTIssuer, route: some ProtectedRoute, now: Date) -> Result<VerifiedCaller, TokenCheckFailure> {
        let time = now.timeIntervalSince1970
        guard payload.issuer == issuer.issuer else { return .failure(.invalidToken("the token's issuer is not trusted here")) }
        guard let expires = payload.expires else { return .failure(.invalidToken("the token has no expiry (exp)")) }
        guard expires + clockSkew > time else { return .failure(.invalidToken("the token expired")) }
        if let notBefore = payload.notBefore, notBefore - clockSkew > time { return .failure(.invalidToken("the token is not valid yet")) }
        guard payload.audiences.contains(issuer.audience) else { return .failure(.invalidToken("the token is for another audience")) }
        guard let user = payload.strings[issuer.userClaim], !user.isEmpty else {
            return .failure(.invalidToken("the token has no \(issuer.userClaim) claim to name its user"))
        }
        var groups: [String] = []
        if let claim = issuer.groupsClaim {
            groups = payload.lists[claim] ?? payload.strings[claim].map { $0.split(separator: " ").map(String.init) } ?? []
        }
        let identity = UserIdentity(login: user, orgs: [], teams: [], groups: groups)
        guard route.accessPolicy.admits(identity) else { return .failure(.denied(login: user)) }
        let claims = AccessTokenClaims(
            iss: issuer.issuer, sub: "jwt:\(issuer.name):\(payload.subject ?? user)", aud: route.resourceURL, exp: Int(expires),
            iat: Int(payload.issuedAt ?? time), jti: payload.tokenID ?? "", client_id: payload.clientID ?? "jwt:\(issuer.name)", scope: Scopes.mcp,
            login: user, email: issuer.emailClaim.flatMap { payload.strings[$0] }
        )
        return .success(VerifiedCaller(claims: claims, identity: identity))
    }

    /// Header and (unverified) payload of a compact JWS.
    static func parts(_ token: String) throws -> (header: [String: Any], payload: Payload) {
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, let headerBytes = Base64URL.decode(String(segments[0])), let payloadBytes = Base64URL.decode(String(segments[1])),
              let header = try JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
              let payload = try JSONSerialization.jsonObject(with: Data(payloadBytes)) as? [String: Any]
        else { throw ExternalTokenError("not a compact JWS") }
        return (header, Payload(payload))
    }

    // MARK: keys

    private func jwksURL(for issuer: JWTIssuer) async throws -> String {
        if let configured = issuer.jwksURL { return configured }
        if let known = discovered.withLock({ $0[issuer.issuer] }) { return known }
        var base = issuer.issuer
        while base.hasSuffix("/") { base.removeLast() }
        guard let document = try await fetchJSON(base + "/.well-known/openid-configuration") as? [String: Any],
              let uri = document["jwks_uri"] as? String, URLComponents(string: uri)?.scheme != nil
        else { throw ExternalTokenError("the issuer's OpenID configuration names no jwks_uri") }
        discovered.withLock { $0[issuer.issuer] = uri }
        return uri
    }

    /// The keys of `url`: cached; fetched when absent, and fetched again when older than an hour
    /// or missing `keyID` (those at most once a minute).
    private func keySet(_ url: String, issuer: JWTIssuer, keyID: String?) async throws -> KeySet {
        let now = ContinuousClock.now
        let cached = keySets.withLock { $0[url] }
        if let cached, now - cached.fetchedAt < Self.maximumKeyAge, keyID.map({ cached.types[$0] != nil }) ?? true { return cached }
        if let cached {
            let mayFetch = lastFetch.withLock { fetches in
                if let last = fetches[url], now - last < Self.refetchInterval { return false }
                fetches[url] = now
                return true
            }
            if !mayFetch { return cached }
        } else if let failed = failedAt.withLock({ $0[url] }), now - failed < Self.retryAfterFailure {
            // An issuer that is down is not asked again on every request.
            throw ExternalTokenError("the last fetch failed less than \(Self.retryAfterFailure) ago")
        }
        do {
            let fresh = try await fetchKeySet(url)
            keySets.withLock { $0[url] = fresh }
            failedAt.withLock { $0[url] = nil }
            logger.info("fetched the keys of an external issuer", metadata: ["issuer": "\(issuer.name)", "keys": "\(fresh.types.count)"])
            return fresh
        } catch {
            // A refresh that fails keeps the keys already known.
            if let cached { return cached }
            failedAt.withLock { $0[url] = now }
            throw error
        }
    }

    private func fetchKeySet(_ url: String) async throws -> KeySet {
        guard let document = try await fetchJSON(url) as? [String: Any], document["keys"] is [Any] else {
            throw ExternalTokenError("the JWKS is not a JSON object with keys")
        }
        return KeySet(keys: await JOSEKeys(document, logger: logger), fetchedAt: .now)
    }

    private func fetchJSON(_ url: String) async throws -> Any {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await http.execute(request, timeout: Self.fetchTimeout)
        let body = try await response.body.collect(upTo: Self.maximumBody)
        guard response.status.code == 200 else { throw ExternalTokenError("\(url) answered HTTP \(response.status.code)") }
        return try JSONSerialization.jsonObject(with: Data(buffer: body))
    }
}

struct ExternalTokenError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
