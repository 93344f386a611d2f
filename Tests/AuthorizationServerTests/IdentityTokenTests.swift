import AuthorizationServer
import Foundation
import GatewayStore
import Testing

/// Identity tokens for upstreams: their claims, their reuse, and that they are never access tokens.
@Suite struct IdentityTokenTests {
    @Test func aTokenNamesTheCallerIsReusedForHalfItsLifeAndIsNoAccessToken() async throws {
        let store = MemoryStore()
        let keys = KeyManager(store: store, settings: .init(algorithm: .es256, rotationInterval: 86400, maxTokenLifetime: 3610))
        let tokens = IdentityTokens(issuer: "https://gw.example", keys: keys)
        let first = try #require(await tokens.token(subject: "local:alice", login: "alice", clientID: "c1", router: "notes", audience: "https://up/mcp", ttl: .seconds(300)))
        let again = await tokens.token(subject: "local:alice", login: "alice", clientID: "c1", router: "notes", audience: "https://up/mcp", ttl: .seconds(300))
        #expect(again == first)
        let otherUpstream = await tokens.token(subject: "local:alice", login: "alice", clientID: "c1", router: "notes", audience: "https://other/mcp", ttl: .seconds(300))
        #expect(otherUpstream != first)

        let ring = try await keys.current()
        let claims = try JWT.verify(first, keys: ring, as: IdentityTokenClaims.self, requiredType: IdentityTokens.type)
        #expect(claims.sub == "local:alice" && claims.aud == "https://up/mcp" && claims.router == "notes" && claims.exp - claims.iat == 300)

        // Presented as an access token (even for its own audience), it is refused.
        let access = AccessTokens(issuer: "https://gw.example", lifetime: .seconds(3600), keys: keys, store: store)
        await #expect(throws: TokenValidationError.self) { _ = try await access.validate(first, audience: "https://up/mcp") }
    }
}
