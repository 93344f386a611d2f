import AuthorizationServer
import Crypto
import Foundation
package import GatewayConfig
package import HTTPTypes

/// Static keys for headless callers (`auth: apiKey`, `auth.apiKeys`): sent as `X-API-Key: <key>`
/// or `Authorization: Bearer <key>`, known to the gateway only by their SHA-256, compared in
/// constant time, never forwarded. A key's caller is `apikey:<name>` with the key's `user` as
/// login, for allow-lists, policies, rate limits, the audit log and metrics.
package enum APIKeys {
    package static let header = HTTPField.Name("X-API-Key")!
    /// Printed by `mcp-gateway new-key`: a prefix that says what the secret is (secret scanners
    /// and people recognise it), then 256 random bits.
    package static let prefix = "mcpgw_"

    /// The key a request presents: `X-API-Key`, or a bearer token that is not a JWT (an access
    /// token of the gateway always has two dots; a key has none).
    package static func presented(_ fields: HTTPFields) -> String? {
        if let key = fields[header]?.trimmingCharacters(in: .whitespaces), !key.isEmpty { return key }
        guard let bearer = BearerToken.from(fields), !bearer.contains(".") else { return nil }
        return bearer
    }

    package static func hash(_ key: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(key.utf8)))
    }

    /// `sha256:<hex>`, as gateway.yaml holds it.
    package static func hashText(_ key: String) -> String {
        "sha256:" + hash(key).map { String(format: "%02x", $0) }.joined()
    }

    /// A fresh key.
    package static func newKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return prefix + text
    }

    /// The configured key `presented` is, comparing its hash with every key's in constant time
    /// (the time does not depend on which key, if any, matched).
    package static func match(_ presented: String, in keys: [APIKey]) -> APIKey? {
        let digest = hash(presented)
        var found: APIKey?
        for key in keys where key.hash.count == digest.count {
            var difference: UInt8 = 0
            for index in 0..<digest.count { difference |= key.hash[index] ^ digest[index] }
            if difference == 0, found == nil { found = key }
        }
        return found
    }

    /// The caller a valid key stands for on `route`, or why there is none.
    package static func check(_ presented: String, keys: [APIKey], route: some ProtectedRoute, issuer: String) -> Result<VerifiedCaller, TokenCheckFailure> {
        guard let key = match(presented, in: keys) else { return .failure(.invalidToken("the API key is not valid")) }
        // A key's user belongs to no organisation or team: known, not unknown.
        let identity = UserIdentity(login: key.user, orgs: [], teams: [])
        guard route.accessPolicy.admits(identity) else { return .failure(.denied(login: key.user)) }
        let now = Int(Date().timeIntervalSince1970)
        let claims = AccessTokenClaims(
            iss: issuer, sub: "apikey:\(key.name)", aud: route.resourceURL, exp: now + 3600, iat: now, jti: "", client_id: "apikey:\(key.name)", scope: Scopes.mcp,
            login: key.user
        )
        return .success(VerifiedCaller(claims: claims, identity: identity))
    }

    /// The answer to a missing or refused credential on a router that does not take the gateway's
    /// OAuth (there is nowhere to send the client to sign in); `methods`: what the router takes.
    package static func refusal(_ failure: TokenCheckFailure, methods: Set<AuthMethod> = [.apiKey]) -> OAuthRefusal {
        let challenge = "Bearer realm=\"mcp-gateway\""
        switch failure {
        case .missingToken:
            var wanted: [String] = []
            if methods.contains(.apiKey) { wanted.append("an API key (X-API-Key or Authorization: Bearer)") }
            if methods.contains(.jwt) { wanted.append("an access token of a trusted issuer (Authorization: Bearer)") }
            return OAuthRefusal(status: .unauthorized, code: "invalid_request", description: "this MCP endpoint requires " + wanted.joined(separator: " or "), challenge: challenge)
        case .invalidToken(let reason):
            return OAuthRefusal(status: .unauthorized, code: "invalid_token", description: reason, challenge: challenge + ", error=\"invalid_token\"")
        case .insufficientScope:
            return OAuthRefusal(status: .forbidden, code: "insufficient_scope", description: "the credential lacks the mcp scope", challenge: challenge)
        case .denied(let login):
            return OAuthRefusal(status: .forbidden, code: "access_denied", description: "\(login) is not allowed to use this MCP endpoint", challenge: challenge)
        case .storeUnavailable:
            return OAuthRefusal(status: .serviceUnavailable, code: "temporarily_unavailable", description: "the gateway's state store is unavailable; retry shortly", retryAfter: "2")
        case .issuerKeysUnavailable:
            return OAuthRefusal(status: .serviceUnavailable, code: "temporarily_unavailable", description: "the token issuer's keys cannot be fetched now; retry shortly", retryAfter: "5")
        }
    }
}
