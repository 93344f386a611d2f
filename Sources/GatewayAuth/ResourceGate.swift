package import AuthorizationServer
import Crypto
package import Foundation
package import GatewayConfig
package import GatewayStore
package import HTTPTypes
import Hummingbird
import Synchronization

/// Who a request to a protected route comes from, once its token passed.
/// A class: every stage, the audit line and the metrics read the one verified caller, and a
/// struct of a dozen strings and arrays cost a retain and a release of each on every copy.
package final class VerifiedCaller: Sendable {
    package let claims: AccessTokenClaims
    /// The caller as allow-lists and call policies see them: the login, with the organisations and
    /// teams when a list or policy of the router names some (nil when not looked up).
    package let identity: UserIdentity

    package init(claims: AccessTokenClaims, identity: UserIdentity? = nil) {
        self.claims = claims
        self.identity = identity ?? UserIdentity(login: claims.login)
    }
}

/// What the gate and session ownership need to know of a router.
package protocol ProtectedRoute: Sendable {
    var router: RouterConfiguration { get }
    /// The router's MCP endpoint URL: the audience its tokens must carry.
    var resourceURL: String { get }
    /// The allow-lists in force for this router.
    var accessPolicy: AccessPolicy { get }
}

/// Why a request's credentials did not make a verified caller.
package enum TokenCheckFailure: Error, Sendable {
    case missingToken
    case invalidToken(String)
    case insufficientScope
    case denied(login: String)
    case storeUnavailable
    /// An external issuer's keys cannot be fetched (and none are cached): fail closed, for now.
    case issuerKeysUnavailable

    /// A bounded name for the metrics' `reason` label (the description of an invalid token is not).
    package var metricReason: String {
        switch self {
        case .missingToken: "missing_token"
        case .invalidToken: "invalid_token"
        case .insufficientScope: "insufficient_scope"
        case .denied: "not_allowed"
        case .storeUnavailable: "store_unavailable"
        case .issuerKeysUnavailable: "issuer_keys_unavailable"
        }
    }
}

/// What the `Authentication` stage asks of a protected router's request: the verified caller its
/// credentials stand for, or the OAuth refusal (with the challenge that tells the client where to
/// get a token). The gateway's own access tokens are one verifier (`ResourceGate`); other kinds of
/// credentials (API keys, tokens of external issuers) are others behind the same stage.
package protocol AccessTokenVerifier: Sendable {
    func check(_ fields: HTTPFields, route: some ProtectedRoute) async -> Result<VerifiedCaller, TokenCheckFailure>
    /// The caller when `check` would admit the request without suspending (a token verified in
    /// the last few seconds), and until when the same token on the same route is sure to get the
    /// same answer; nil otherwise.
    func admittedFromCache(_ fields: HTTPFields, route: some ProtectedRoute) -> (caller: VerifiedCaller, until: Date)?
    func refusal(_ failure: TokenCheckFailure, router: RouterConfiguration) -> OAuthRefusal
}

/// The token check in front of every protected router (RFC 6750 + RFC 9728 challenges): an ES256 /
/// RS256 JWT of this gateway, for this router's MCP endpoint (`aud`), not expired or revoked, with
/// the `mcp` scope, of a user the allow-lists in force admit now. Verified tokens are remembered
/// for a few seconds (keyed by a hash of the token) so the hot path does no store round trip and
/// no signature check; allow-lists are evaluated on every request, so a reload applies at once.
package final class ResourceGate: AccessTokenVerifier {
    package struct CachedToken {
        package var claims: AccessTokenClaims
        package var hasMCPScope: Bool
        package var validUntil: Date
    }

    package static let cacheSeconds: TimeInterval = 5
    package static let maxCachedTokens = 10_000

    package let accessTokens: AccessTokens
    package let publicURL: PublicURL
    package let store: any KeyValueStore
    package let membership: MembershipChecker?
    /// Keyed by the token's SHA-256 (the digest itself: no string is built per request).
    private let cache = Mutex<[SHA256.Digest: CachedToken]>([:])
    /// Verifications under way, by the token's SHA-256, with how many checks wait for each: a
    /// token not remembered (or no longer) is verified once however many requests bring it at
    /// that moment. When a busy token's memo runs out, every connection's next request misses at
    /// once; each used to check the signature and ask the store for revocations itself.
    private let verifying = Mutex<[SHA256.Digest: (verification: Task<Result<AccessTokenClaims, TokenValidationError>, Never>, waiting: Int)]>([:])
    /// Identities as a router's policy needed them (orgs/teams), per subject and router, for the
    /// same few seconds.
    private let identities = Mutex<[String: (identity: UserIdentity, validUntil: Date)]>([:])

    /// Whether a machine client (`auth.clients`) is configured now: its `client_credentials`
    /// tokens stop working the moment a reload removes it.
    package let isConfiguredMachineClient: @Sendable (String) -> Bool

    package init(
        accessTokens: AccessTokens, publicURL: PublicURL, store: any KeyValueStore, membership: MembershipChecker? = nil,
        isConfiguredMachineClient: @escaping @Sendable (String) -> Bool = { _ in false }
    ) {
        self.isConfiguredMachineClient = isConfiguredMachineClient
        self.accessTokens = accessTokens
        self.publicURL = publicURL
        self.store = store
        self.membership = membership
    }

    package typealias Failure = TokenCheckFailure

    package func check(_ fields: HTTPFields, route: some ProtectedRoute) async -> Result<VerifiedCaller, Failure> {
        guard let token = BearerToken.from(fields) else { return .failure(.missingToken) }
        var bearer = token
        let key = bearer.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        let now = Date()
        var entry = cache.withLock { $0[key] }
        if let cached = entry, cached.validUntil <= now { entry = nil }
        if entry == nil {
            switch await verified(token, key: key) {
            case .success(let fresh): entry = fresh
            case .failure(.invalid(let description)): return .failure(.invalidToken(description))
            case .failure(.storeUnavailable): return .failure(.storeUnavailable)
            }
        }
        guard let entry else { return .failure(.invalidToken("the access token is not valid")) }
        switch verdict(entry, route: route, now: now) {
        case .decided(let result):
            return result
        case .needsIdentity(let claims, let identityKey):
            let fresh = await self.identity(for: claims, policy: route.accessPolicy)
            identities.withLock { cached in
                if cached.count >= Self.maxCachedTokens { cached = cached.filter { $0.value.validUntil > now } }
                if cached.count < Self.maxCachedTokens { cached[identityKey] = (fresh, now.addingTimeInterval(Self.cacheSeconds)) }
            }
            guard route.accessPolicy.admits(fresh) else { return .failure(.denied(login: claims.login)) }
            return .success(VerifiedCaller(claims: claims, identity: fresh))
        }
    }

    /// `token` verified (signature, claims, revocation) and remembered, by the one verification
    /// of it under way or by a new one. The verification runs in its own task: a waiting check
    /// that is cancelled (its client gone) does not cancel it for the others.
    private func verified(_ token: String, key: SHA256.Digest) async -> Result<CachedToken, TokenValidationError> {
        let verification = verifying.withLock { verifying in
            if let running = verifying[key] {
                verifying[key]?.waiting += 1
                return running.verification
            }
            let verification = Task { [self] () -> Result<AccessTokenClaims, TokenValidationError> in
                let result: Result<AccessTokenClaims, TokenValidationError>
                do throws(TokenValidationError) { result = .success(try await accessTokens.validate(token, audience: nil)) } catch { result = .failure(error) }
                // Remembered before the verification is done with: a check arriving now finds one
                // or the other.
                if case .success(let claims) = result {
                    let now = Date()
                    let fresh = Self.cached(claims, now: now)
                    self.cache.withLock { cache in
                        if cache.count >= Self.maxCachedTokens { cache = cache.filter { $0.value.validUntil > now } }
                        if cache.count < Self.maxCachedTokens { cache[key] = fresh }
                    }
                }
                _ = self.verifying.withLock { $0.removeValue(forKey: key) }
                return result
            }
            verifying[key] = (verification, 1)
            return verification
        }
        let result = await verification.value
        verifying.withLock { verifying in
            if verifying[key]?.verification == verification { verifying[key]?.waiting -= 1 }
        }
        return result.map { Self.cached($0, now: Date()) }
    }

    private static func cached(_ claims: AccessTokenClaims, now: Date) -> CachedToken {
        CachedToken(
            claims: claims, hasMCPScope: claims.scope.split(separator: " ").contains(Substring(Scopes.mcp)),
            validUntil: min(now.addingTimeInterval(cacheSeconds), Date(timeIntervalSince1970: TimeInterval(claims.exp)))
        )
    }

    /// How many checks wait for a verification under way now (for tests: that concurrent checks of
    /// one token share it).
    package var checksWaitingForVerification: Int {
        verifying.withLock { $0.values.reduce(0) { $0 + $1.waiting } }
    }

    /// The caller of a token verified in the last few seconds, when everything the check needs is
    /// at hand (no signature, store or membership lookup): the same decision as `check`, made
    /// without suspending. Nil for anything else, failures included: `check` answers those.
    package func admittedFromCache(_ fields: HTTPFields, route: some ProtectedRoute) -> (caller: VerifiedCaller, until: Date)? {
        guard let token = BearerToken.from(fields) else { return nil }
        var bearer = token
        let key = bearer.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        let now = Date()
        guard let entry = cache.withLock({ $0[key] }), entry.validUntil > now,
              case .decided(.success(let caller)) = verdict(entry, route: route, now: now)
        else { return nil }
        // Decided by the login alone: certain while the verified token is remembered. Decided by
        // orgs or teams remembered separately: certain only now.
        let byLogin = !route.accessPolicy.callPoliciesNeedMembership && route.accessPolicy.admits(UserIdentity(login: caller.claims.login))
        return (caller, byLogin ? entry.validUntil : now)
    }

    private enum Verdict {
        case decided(Result<VerifiedCaller, Failure>)
        /// The allow-lists need the user's orgs or teams, not known in the last few seconds.
        case needsIdentity(AccessTokenClaims, identityKey: String)
    }

    /// Expiry, audience, the machine client, scope, then the allow-lists, for a verified token.
    private func verdict(_ entry: CachedToken, route: some ProtectedRoute, now: Date) -> Verdict {
        let claims = entry.claims
        guard TimeInterval(claims.exp) + AccessTokens.clockSkew > now.timeIntervalSince1970 else {
            return .decided(.failure(.invalidToken("the access token expired")))
        }
        guard claims.aud == route.resourceURL else {
            return .decided(.failure(.invalidToken("the access token is for \(claims.aud), not \(route.resourceURL)")))
        }
        if claims.gty == "client_credentials", !isConfiguredMachineClient(claims.client_id) {
            return .decided(.failure(.invalidToken("the client this token was issued to is no longer configured")))
        }
        guard entry.hasMCPScope else { return .decided(.failure(.insufficientScope)) }
        // Only a token for this router reaches the identity lookup (which may ask GitHub); the
        // identity is shaped by this router's policy, so it is not cached with the token.
        let loginOnly = UserIdentity(login: claims.login)
        if !route.accessPolicy.callPoliciesNeedMembership, route.accessPolicy.admits(loginOnly) { return .decided(.success(VerifiedCaller(claims: claims))) }
        let identityKey = "\(claims.sub)\u{0}\(route.router.name)"
        let identity = identities.withLock { cached -> UserIdentity? in
            guard let entry = cached[identityKey], entry.validUntil > now else { return nil }
            return entry.identity
        }
        guard let identity else { return .needsIdentity(claims, identityKey: identityKey) }
        guard route.accessPolicy.admits(identity) else { return .decided(.failure(.denied(login: claims.login))) }
        return .decided(.success(VerifiedCaller(claims: claims, identity: identity)))
    }

    /// The user as the allow-lists see them: the login alone when it suffices; otherwise orgs and
    /// teams re-checked at GitHub (at most every membershipTTL) when a membership token is
    /// configured, else as recorded at sign-in (`identity:<sub>`).
    private func identity(for claims: AccessTokenClaims, policy: AccessPolicy) async -> UserIdentity {
        let loginOnly = UserIdentity(login: claims.login)
        if !policy.needsMembership || (!policy.callPoliciesNeedMembership && policy.admits(loginOnly)) { return loginOnly }
        var recorded = loginOnly
        if let bytes = try? await store.get("identity:\(claims.sub)"), let subject = try? JSONDecoder().decode(GrantSubject.self, from: Data(bytes)) {
            recorded = UserIdentity(login: claims.login, orgs: subject.orgs, teams: subject.teams)
        }
        // Local accounts belong to no organisation or team: known, not unknown.
        guard claims.sub.hasPrefix("github:") else { return UserIdentity(login: claims.login, orgs: recorded.orgs ?? [], teams: recorded.teams ?? []) }
        guard let membership else { return recorded }
        let rules = [policy.global] + (policy.router.map { [$0] } ?? [])
        return await membership.identity(
            login: claims.login, subject: claims.sub, orgs: Set(rules.flatMap(\.orgs)).union(policy.policyOrgs),
            teams: Set(rules.flatMap(\.teams)).union(policy.policyTeams), fallback: recorded
        )
    }

    // MARK: challenges

    /// RFC 9728 §5.1: the protected-resource metadata URL of a router, path-inserted.
    package func resourceMetadataURL(_ router: RouterConfiguration) -> String {
        let resource = router.resourceURL(publicURL: publicURL)
        guard let components = URLComponents(string: resource), let scheme = components.scheme, let host = components.host else { return resource }
        var origin = "\(scheme)://\(host)"
        if let port = components.port { origin += ":\(port)" }
        return origin + "/.well-known/oauth-protected-resource" + components.path
    }

    /// The OAuth answer to a failed check: 401 with the challenge that names where to get a token,
    /// 403 for a token that cannot do more by signing in again, 503 when the store cannot answer.
    package func refusal(_ failure: Failure, router: RouterConfiguration) -> OAuthRefusal {
        let metadata = resourceMetadataURL(router)
        var challenge = "Bearer resource_metadata=\"\(metadata)\", scope=\"\(Scopes.mcp)\""
        switch failure {
        case .missingToken:
            return OAuthRefusal(
                status: .unauthorized, code: "invalid_request", description: "this MCP endpoint requires an access token from \(publicURL.origin)", challenge: challenge
            )
        case .invalidToken(let reason):
            challenge += ", error=\"invalid_token\", error_description=\"\(reason.replacingOccurrences(of: "\"", with: "'"))\""
            return OAuthRefusal(status: .unauthorized, code: "invalid_token", description: reason, challenge: challenge)
        case .insufficientScope:
            challenge += ", error=\"insufficient_scope\""
            return OAuthRefusal(status: .forbidden, code: "insufficient_scope", description: "the access token lacks the \(Scopes.mcp) scope", challenge: challenge)
        case .denied(let login):
            // No `insufficient_scope` here: another sign-in would not help, and clients would loop.
            return OAuthRefusal(status: .forbidden, code: "access_denied", description: "\(login) is not allowed to use this MCP endpoint", challenge: challenge)
        case .storeUnavailable:
            return OAuthRefusal(
                status: .serviceUnavailable, code: "temporarily_unavailable", description: "the gateway's state store is unavailable; retry shortly",
                challenge: challenge, retryAfter: "2"
            )
        case .issuerKeysUnavailable:
            return APIKeys.refusal(failure)
        }
    }

    /// RFC 9728 metadata for a router.
    package func protectedResourceMetadata(_ router: RouterConfiguration) -> [String: Any] {
        [
            "resource": router.resourceURL(publicURL: publicURL),
            "authorization_servers": [publicURL.origin],
            "scopes_supported": Scopes.supported,
            "bearer_methods_supported": ["header"],
            "resource_name": router.name,
        ]
    }
}
