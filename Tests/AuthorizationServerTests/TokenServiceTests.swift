@testable import AuthorizationServer
import Foundation
import GatewayStore
import Synchronization
import Testing

/// A clock the tests move by hand.
final class WallClock: Sendable {
    private let time = Mutex(Date(timeIntervalSince1970: 1_900_000_000))
    var now: Date { time.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { time.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

@Suite struct AccessTokenTests {
    let clock = WallClock()
    let grant = Grant(clientID: "c1", user: GrantSubject(subject: "github:1", login: "octocat"), scope: "mcp", resource: "https://gw.example/time/mcp")

    func tokens(store: MemoryStore, rotationInterval: TimeInterval = 86400, algorithm: SigningAlgorithm = .es256) -> AccessTokens {
        let clock = self.clock
        let keys = KeyManager(store: store, settings: .init(algorithm: algorithm, rotationInterval: rotationInterval, maxTokenLifetime: 3610), now: { clock.now })
        return AccessTokens(issuer: "https://gw.example", lifetime: .seconds(3600), keys: keys, store: store, now: { clock.now })
    }

    @Test func issuedTokensValidateForTheirAudienceOnly() async throws {
        let service = tokens(store: MemoryStore())
        let token = try await service.issue(for: grant)
        let claims = try await service.validate(token, audience: "https://gw.example/time/mcp")
        #expect(claims.sub == "github:1" && claims.exp - claims.iat == 3600 && claims.client_id == "c1")
        await #expect(throws: TokenValidationError.self) { try await service.validate(token, audience: "https://gw.example/notes/mcp") }
    }

    @Test func notBeforeIsHonoured() async throws {
        let store = MemoryStore()
        let service = tokens(store: store)
        let ring = try await service.keys.current()
        let now = Int(clock.now.timeIntervalSince1970)
        let claims = AccessTokenClaims(
            iss: "https://gw.example", sub: "github:1", aud: "https://gw.example/time/mcp", exp: now + 3600, iat: now, jti: "j-1",
            client_id: "c1", scope: "mcp", login: "octocat", nbf: now + 600
        )
        let token = try JWT.sign(claims, with: try #require(ring.current))
        await #expect(throws: TokenValidationError.invalid("the access token is not valid yet")) { try await service.validate(token, audience: nil) }
        clock.advance(600 - AccessTokens.clockSkew + 1)
        _ = try await service.validate(token, audience: nil)
        // Issued tokens carry nbf = iat.
        let issued = try await service.validate(try await service.issue(for: grant), audience: nil)
        #expect(issued.nbf == issued.iat)
    }

    @Test func revokingTheSignInRevokesItsAccessTokens() async throws {
        let store = MemoryStore()
        let service = tokens(store: store)
        let token = try await service.issue(for: grant, family: "fam-x")
        let other = try await service.issue(for: grant, family: "fam-y")
        _ = try await service.validate(token, audience: nil)
        try await RefreshTokens(store: store, lifetime: .seconds(3600)).revokeFamily("fam-x")
        await #expect(throws: TokenValidationError.invalid("the sign-in this token belongs to was revoked")) { try await service.validate(token, audience: nil) }
        _ = try await service.validate(other, audience: nil)
    }

    @Test func expiryAllowsOnlySmallSkew() async throws {
        let service = tokens(store: MemoryStore())
        let token = try await service.issue(for: grant)
        clock.advance(3600 + AccessTokens.clockSkew - 1)
        _ = try await service.validate(token, audience: nil)
        clock.advance(2)
        await #expect(throws: TokenValidationError.invalid("the access token expired")) { try await service.validate(token, audience: nil) }
    }

    @Test func revocationOfOneTokenAndOfAClient() async throws {
        let store = MemoryStore()
        let service = tokens(store: store)
        let first = try await service.issue(for: grant)
        let second = try await service.issue(for: grant)
        try await service.revoke(try await service.validate(first, audience: nil))
        await #expect(throws: TokenValidationError.self) { try await service.validate(first, audience: nil) }
        _ = try await service.validate(second, audience: nil)
        try await service.revokeAll(clientID: "c1")
        await #expect(throws: TokenValidationError.self) { try await service.validate(second, audience: nil) }
        // Tokens issued after the deletion (a client re-registered under the same id cannot
        // happen, but the check is by time) are not affected.
        clock.advance(2)
        _ = try await service.validate(try await service.issue(for: grant), audience: nil)
    }

    @Test func rotationKeepsOldTokensValidUntilTheyExpire() async throws {
        let store = MemoryStore()
        let service = tokens(store: store, rotationInterval: 7200)
        let old = try await service.issue(for: grant)
        clock.advance(7200)
        let new = try await service.issue(for: grant)
        #expect(JWTHeader.kid(old) != JWTHeader.kid(new))
        let ring = try await KeyRingRepository(store: store).loadOrCreate()
        #expect(ring.keys.count == 2)
        #expect(ring.current?.kid == JWTHeader.kid(new))
        _ = try await service.validate(new, audience: nil)
        // After another rotation interval the retired key (older than the longest token life) is pruned.
        clock.advance(7200)
        _ = try await service.issue(for: grant)
        let pruned = try await KeyRingRepository(store: store).loadOrCreate()
        #expect(pruned.keys.count == 2 && pruned.key(id: JWTHeader.kid(old) ?? "") == nil)
    }

    @Test func rs256SignsAndTheHeaderCannotSwitchAlgorithms() async throws {
        let service = tokens(store: MemoryStore(), algorithm: .rs256)
        let token = try await service.issue(for: grant)
        #expect(token.hasPrefix(Base64URL.encode(Data(#"{"alg":"RS256""#.utf8)).prefix(10)))
        _ = try await service.validate(token, audience: nil)
        // Relabel as ES256 with the same kid: refused, the key decides the algorithm.
        let parts = token.split(separator: ".").map(String.init)
        let kid = JWTHeader.kid(token) ?? ""
        let relabelled = Base64URL.encode(Data(#"{"alg":"ES256","kid":"\#(kid)","typ":"at+jwt"}"#.utf8))
        await #expect(throws: TokenValidationError.self) { try await service.validate("\(relabelled).\(parts[1]).\(parts[2])", audience: nil) }
    }

    @Test func aTokenWithAnythingAddedAroundItsDotsIsRefused() async throws {
        let service = tokens(store: MemoryStore())
        let token = try await service.issue(for: grant)
        _ = try await service.validate(token, audience: nil)
        let parts = token.split(separator: ".").map(String.init)
        #expect(parts.count == 3)
        let (header, payload, signature) = (parts[0], parts[1], parts[2])
        let altered = [
            "\(header).\(payload).\(signature).", ".\(header).\(payload).\(signature)", "\(header)..\(payload).\(signature)",
            "\(header).\(payload)", "\(header).\(payload).", "\(header).\(payload).\(signature)=",
            // A combining mark joins the dot into one `Character`; split on bytes it is a part's first.
            "\(header).\u{301}\(payload).\(signature)", "\(header).\(payload).\u{301}\(signature)", "\(header)\u{301}.\(payload).\(signature)",
            "\(header).\(payload).\(signature)\u{301}", "\(header)．\(payload)．\(signature)", "\(header). \(payload).\(signature)",
        ]
        for token in altered {
            await #expect(throws: TokenValidationError.self, "\(token.debugDescription)") { try await service.validate(token, audience: nil) }
        }
    }
}

enum JWTHeader {
    static func kid(_ token: String) -> String? {
        guard let first = token.split(separator: ".").first, let data = Base64URL.decode(first),
              let json = try? JSONSerialization.jsonObject(with: Data(data)) as? [String: Any]
        else { return nil }
        return json["kid"] as? String
    }
}

@Suite struct ScopeTests {
    @Test func unknownScopesAreDroppedAndNothingKnownMeansMCP() {
        #expect(Scopes.grant(requested: "claudeai mcp") == "mcp")
        #expect(Scopes.grant(requested: "claudeai") == "mcp")
        #expect(Scopes.grant(requested: nil) == "mcp")
        #expect(Scopes.narrow(granted: "mcp", requested: "mcp") == "mcp")
        #expect(Scopes.narrow(granted: "mcp", requested: nil) == "mcp")
    }
}

@Suite struct MetadataDocumentTests {
    let url = "https://app.example/oauth/client.json"

    @Test func documentMustNameItsOwnURLAndBePublic() throws {
        let good: [String: Any] = ["client_id": url, "client_name": "App", "redirect_uris": ["https://app.example/cb"]]
        let metadata = try ClientMetadataValidator.validateDocument(good, url: url)
        #expect(metadata.token_endpoint_auth_method == .none && metadata.grant_types.contains("refresh_token"))
        var other = good
        other["client_id"] = "https://evil.example/client.json"
        #expect(throws: RegistrationError.self) { try ClientMetadataValidator.validateDocument(other, url: url) }
        var confidential = good
        confidential["token_endpoint_auth_method"] = "client_secret_basic"
        #expect(throws: RegistrationError.self) { try ClientMetadataValidator.validateDocument(confidential, url: url) }
        var badRedirect = good
        badRedirect["redirect_uris"] = ["http://localhost.evil.com/cb"]
        #expect(throws: RegistrationError.self) { try ClientMetadataValidator.validateDocument(badRedirect, url: url) }
    }

    @Test func onlyHTTPSURLsWithAPathAreDocumentIDs() {
        #expect(ClientDirectory.isMetadataDocumentURL(url))
        #expect(ClientDirectory.isMetadataDocumentURL("https://claude.ai/oauth/mcp-oauth-client-metadata"))
        #expect(!ClientDirectory.isMetadataDocumentURL("https://app.example/"))
        #expect(!ClientDirectory.isMetadataDocumentURL("http://app.example/client.json"))
        #expect(!ClientDirectory.isMetadataDocumentURL("mcpgw-abc"))
    }
}
