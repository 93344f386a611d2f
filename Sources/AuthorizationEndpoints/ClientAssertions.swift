import AuthorizationServer
package import Foundation
package import GatewayAuth
package import GatewayStore

/// RFC 7523 client authentication (`private_key_jwt`) for Client ID Metadata Documents that
/// declare it (ChatGPT's): the client signs a short-lived JWT with a key its document publishes
/// (`jwks` inline or at `jwks_uri`). `iss` and `sub` must be the client id, `aud` this
/// authorization server (its issuer or token endpoint), `exp` within the next hour, and `jti` is
/// single use (remembered in the store until the assertion expires, so a replay fails on every
/// instance).
package enum ClientAssertions {
    package static let type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    static let clockSkew: TimeInterval = 30
    static let maximumLifetime: TimeInterval = 3600

    /// The client an assertion says it is from (`sub`, else `iss`), before any check.
    package static func claimedClient(_ assertion: String) -> String? {
        let segments = assertion.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, let bytes = Base64URL.decode(segments[1]),
              let payload = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        else { return nil }
        return (payload["sub"] as? String) ?? (payload["iss"] as? String)
    }

    /// The key id an assertion names, if any.
    package static func keyID(_ assertion: String) -> String? {
        guard let first = assertion.split(separator: ".").first, let bytes = Base64URL.decode(first),
              let header = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        else { return nil }
        return header["kid"] as? String
    }

    /// Checks `assertion` for `clientID` against its published keys; the description of a failure
    /// is safe to return to the client.
    package static func verify(
        _ assertion: String, clientID: String, keys: JOSEKeys, audiences: Set<String>, store: any KeyValueStore, now: Date = Date()
    ) async throws(JOSEError) {
        let payload = try await keys.verify(assertion)
        guard payload["iss"] as? String == clientID, payload["sub"] as? String == clientID else {
            throw JOSEError("the client assertion's iss and sub must both be the client_id")
        }
        let audience: [String] = switch payload["aud"] {
        case let single as String: [single]
        case let many as [Any]: many.compactMap { $0 as? String }
        default: []
        }
        guard audience.contains(where: audiences.contains) else {
            throw JOSEError("the client assertion's aud must name this authorization server")
        }
        let time = now.timeIntervalSince1970
        guard let expires = (payload["exp"] as? NSNumber)?.doubleValue else { throw JOSEError("the client assertion has no exp") }
        guard expires + clockSkew > time else { throw JOSEError("the client assertion expired") }
        guard expires - time <= maximumLifetime else { throw JOSEError("the client assertion lives longer than an hour") }
        if let notBefore = (payload["nbf"] as? NSNumber)?.doubleValue, notBefore - clockSkew > time {
            throw JOSEError("the client assertion is not valid yet")
        }
        guard let jti = payload["jti"] as? String, !jti.isEmpty, jti.utf8.count <= 256 else {
            throw JOSEError("the client assertion has no jti")
        }
        let key = "assertion-jti:" + ClientRegistry.hash(clientID + "\u{0}" + jti)
        let remaining = Int(max(1, expires + clockSkew - time))
        let fresh: Bool
        do { fresh = try await store.setIfAbsent(key, Array("1".utf8), ttl: .seconds(remaining)) } catch {
            throw JOSEError("the gateway's state store is unavailable; retry shortly")
        }
        guard fresh else { throw JOSEError("the client assertion was already used") }
    }
}
