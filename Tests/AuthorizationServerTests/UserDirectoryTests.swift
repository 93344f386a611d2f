import AuthorizationServer
import Foundation
import GatewayStore
import Testing

/// Who signed in, and revoking everything a user holds.
@Suite struct UserDirectoryTests {
    @Test func signInsAreCountedAndListedMostRecentFirst() async throws {
        let store = MemoryStore()
        let users = UserDirectory(store: store, lifetime: .seconds(3600))
        try await users.recordSignIn(login: "Alice", subject: "github:1", clientID: "c1", now: Date(timeIntervalSince1970: 100))
        try await users.recordSignIn(login: "bob", subject: "local:bob", clientID: "c2", now: Date(timeIntervalSince1970: 200))
        try await users.recordSignIn(login: "alice", subject: "github:1", clientID: "c3", now: Date(timeIntervalSince1970: 300))
        let listed = try await users.list()
        #expect(listed.map(\.login) == ["alice", "bob"])
        #expect(listed[0].signIns == 2 && listed[0].firstSeen == 100 && listed[0].lastSeen == 300 && listed[0].lastClientID == "c3")
        try await users.recordActivity(login: "bob", now: Date(timeIntervalSince1970: 400))
        #expect(try await users.list().first?.login == "bob")
    }

    @Test func revokingAUserRevokesEachOfTheirSignInsAndNoOneElses() async throws {
        let store = MemoryStore()
        let refresh = RefreshTokens(store: store, lifetime: .seconds(3600))
        let users = UserDirectory(store: store, lifetime: .seconds(3600))
        let grant = { (login: String) in Grant(clientID: "c", user: GrantSubject(subject: "local:\(login)", login: login), scope: "mcp", resource: "https://gw/r/mcp") }
        var tokens: [String: String] = [:]
        for (login, family) in [("bob", "f1"), ("bob", "f2"), ("carol", "f3")] {
            try await users.addFamily(login: login, family: family)
            tokens[family] = try await refresh.issue(grant(login), family: family)
        }
        #expect(try await users.revokeAll(login: "BOB", refreshTokens: refresh) == 2)
        #expect(try await refresh.inspect(try #require(tokens["f1"])) == nil)
        #expect(try await refresh.inspect(try #require(tokens["f2"])) == nil)
        #expect(try await refresh.inspect(try #require(tokens["f3"])) != nil)
        // Nothing left to revoke the second time.
        #expect(try await users.revokeAll(login: "bob", refreshTokens: refresh) == 0)
    }
}
