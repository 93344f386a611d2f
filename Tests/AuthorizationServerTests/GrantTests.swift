import AuthorizationServer
import Foundation
import GatewayStore
import Synchronization
import Testing

/// A clock tests can move.
final class TestClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    var now: ContinuousClock.Instant { instant.withLock { $0 } }
    func advance(_ duration: Duration) { instant.withLock { $0 += duration } }
}

let alice = GrantSubject(subject: "github:1", login: "alice")
let grant = Grant(clientID: "client-a", user: alice, scope: "mcp", resource: "https://gw.example/time/mcp")
let verifier = String(repeating: "v", count: 20) + "-._~" + String(repeating: "0", count: 24)

@Suite struct PKCETests {
    @Test func s256RoundTrip() {
        let challenge = PKCE.challenge(for: verifier)
        #expect(PKCE.isValidChallenge(challenge))
        #expect(PKCE.verify(verifier: verifier, challenge: challenge))
        #expect(!PKCE.verify(verifier: verifier + "x", challenge: challenge))
    }

    @Test func rejectsPlainAndMalformed() {
        // "plain" would send the verifier itself as challenge: not a valid S256 challenge.
        #expect(!PKCE.isValidChallenge(verifier))
        #expect(!PKCE.isValidVerifier("short"))
        #expect(!PKCE.isValidVerifier(String(repeating: "a", count: 129)))
        #expect(!PKCE.isValidVerifier(String(repeating: "a", count: 42) + "!"))
        // RFC 7636 appendix B test vector.
        #expect(PKCE.challenge(for: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    }
}

@Suite struct AuthorizationCodeTests {
    let challenge = PKCE.challenge(for: verifier)

    @Test func aReplayedCodeRevokesTheSignInItWasExchangedFor() async throws {
        let store = MemoryStore()
        let codes = AuthorizationCodes(store: store)
        let code = try await codes.issue(grant, redirectURI: "https://claude.ai/cb", codeChallenge: challenge)
        _ = try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: nil, family: "fam-first")
        #expect(try await store.get("family-revoked:fam-first") == nil)
        await #expect(throws: GrantError.invalidGrant("the authorization code was already used; the tokens issued for it are now revoked")) {
            try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: nil, family: "fam-second")
        }
        #expect(try await store.get("family-revoked:fam-first") != nil)
        #expect(try await store.get("family-revoked:fam-second") == nil)
    }

    @Test func redeemsOnceWithEveryBinding() async throws {
        let codes = AuthorizationCodes(store: MemoryStore())
        let code = try await codes.issue(grant, redirectURI: "https://claude.ai/cb", codeChallenge: challenge)
        let redeemed = try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: grant.resource, family: "fam-1")
        #expect(redeemed == grant)
        await #expect(throws: GrantError.self) {
            try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: nil, family: "fam-1")
        }
    }

    @Test(arguments: [
        ("client-b", "https://claude.ai/cb", true, "another client"),
        ("client-a", "https://claude.ai/other", true, "redirect_uri"),
        ("client-a", "https://claude.ai/cb", false, "code_verifier"),
    ])
    func wrongBindingsFailAndBurnTheCode(clientID: String, redirectURI: String, rightVerifier: Bool, fragment: String) async throws {
        let codes = AuthorizationCodes(store: MemoryStore())
        let code = try await codes.issue(grant, redirectURI: "https://claude.ai/cb", codeChallenge: challenge)
        do {
            _ = try await codes.redeem(code, clientID: clientID, redirectURI: redirectURI, codeVerifier: rightVerifier ? verifier : verifier + "x", resource: nil, family: "fam-1")
            Issue.record("redeemed with a wrong binding")
        } catch {
            guard case .invalidGrant(let description) = error else { Issue.record("\(error)"); return }
            #expect(description.contains(fragment))
        }
        // The legitimate client cannot use it afterwards either.
        await #expect(throws: GrantError.self) {
            try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: nil, family: "fam-1")
        }
    }

    @Test func wrongResourceFails() async throws {
        let codes = AuthorizationCodes(store: MemoryStore())
        let code = try await codes.issue(grant, redirectURI: "https://claude.ai/cb", codeChallenge: challenge)
        await #expect(throws: GrantError.self) {
            try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: "https://gw.example/notes/mcp", family: "fam-1")
        }
    }

    @Test func codesExpireAfterSixtySeconds() async throws {
        let clock = TestClock()
        let codes = AuthorizationCodes(store: MemoryStore(now: { clock.now }))
        let code = try await codes.issue(grant, redirectURI: "https://claude.ai/cb", codeChallenge: challenge)
        clock.advance(.seconds(61))
        await #expect(throws: GrantError.self) {
            try await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: nil, family: "fam-1")
        }
    }

    @Test func concurrentDoubleSpendHasOneWinner() async throws {
        let codes = AuthorizationCodes(store: MemoryStore())
        let code = try await codes.issue(grant, redirectURI: "https://claude.ai/cb", codeChallenge: challenge)
        let wins = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    (try? await codes.redeem(code, clientID: "client-a", redirectURI: "https://claude.ai/cb", codeVerifier: verifier, resource: nil, family: "fam-1")) != nil
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(wins == 1)
    }
}

extension RefreshTokens {
    /// A rotation answered at once, as the token endpoint answers one.
    func rotateAnswered(_ token: String, clientID: String) async throws(GrantError) -> (Grant, String, String) {
        switch try await rotate(token, clientID: clientID) {
        case .rotated(let grant, let next, let family):
            await answerSent(for: token)
            return (grant, next, family)
        case .racing:
            throw GrantError.invalidGrant("unexpected race")
        }
    }
}

@Suite struct RefreshTokenTests {
    @Test func rotatesOnEveryUse() async throws {
        let tokens = RefreshTokens(store: MemoryStore(), lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        let (rotatedGrant, second, _) = try await tokens.rotateAnswered(first, clientID: "client-a")
        #expect(rotatedGrant == grant)
        #expect(second != first)
        let (_, third, _) = try await tokens.rotateAnswered(second, clientID: "client-a")
        #expect(third != second)
    }

    @Test func reuseRevokesTheWholeFamily() async throws {
        let tokens = RefreshTokens(store: MemoryStore(), lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        let (_, second, _) = try await tokens.rotateAnswered(first, clientID: "client-a")
        // The old token shows up again (stolen copy): rejected, and the current one dies too.
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(first, clientID: "client-a") }
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(second, clientID: "client-a") }
    }

    @Test func anotherClientCannotRedeem() async throws {
        let tokens = RefreshTokens(store: MemoryStore(), lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        do {
            _ = try await tokens.rotateAnswered(first, clientID: "client-b")
            Issue.record("another client redeemed the token")
        } catch {
            #expect(error == .invalidGrant("the refresh token was issued to another client"))
        }
    }

    @Test func deletingTheClientRevokesItsTokens() async throws {
        let store = MemoryStore()
        let tokens = RefreshTokens(store: store, lifetime: .seconds(3600))
        let mine = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        var other = grant
        other.clientID = "client-z"
        let theirs = try await tokens.issue(other, family: RefreshTokens.newFamily())
        try await tokens.revokeAll(clientID: "client-a")
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(mine, clientID: "client-a") }
        _ = try await tokens.rotateAnswered(theirs, clientID: "client-z")
    }

    @Test func expiredTokensFail() async throws {
        let clock = TestClock()
        let tokens = RefreshTokens(store: MemoryStore(now: { clock.now }), lifetime: .seconds(100))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        clock.advance(.seconds(101))
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(first, clientID: "client-a") }
    }

    @Test func onlyHashesAreStored() async throws {
        let store = MemoryStore()
        let tokens = RefreshTokens(store: store, lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        #expect(try await store.get("refresh:\(first)") == nil)
        #expect(try await store.get("refresh:\(ClientRegistry.hash(first))") != nil)
    }

    @Test func aPresentationRacingTheFirstGetsTheSameAnswer() async throws {
        let store = MemoryStore()
        let tokens = RefreshTokens(store: store, lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        guard case .rotated(_, let second, _) = try await tokens.rotate(first, clientID: "client-a") else {
            Issue.record("the first presentation did not rotate")
            return
        }
        // The racer arrives while the first is being answered: it waits for that answer.
        let racer = Task { try await tokens.rotate(first, clientID: "client-a") }
        let answer = Array(#"{"refresh_token":"\#(second)"}"#.utf8)
        try await tokens.holdAnswer(answer, for: first, clientID: "client-a")
        guard case .racing(let repeated) = try await racer.value else {
            Issue.record("the racing presentation was not given the first answer")
            return
        }
        #expect(repeated == answer)
        // Held sealed: the store never shows the new token.
        let held = try #require(try await store.get("refresh-held:\(ClientRegistry.hash(first))"))
        #expect(!String(decoding: held, as: UTF8.self).contains(second))
        // Once the answer was sent, the same token again is reuse: the family goes.
        await tokens.answerSent(for: first)
        await #expect(throws: GrantError.self) { try await tokens.rotate(first, clientID: "client-a") }
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(second, clientID: "client-a") }
    }

    @Test func anotherClientRacingIsTheft() async throws {
        let tokens = RefreshTokens(store: MemoryStore(), lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        guard case .rotated(_, let second, _) = try await tokens.rotate(first, clientID: "client-a") else {
            Issue.record("the first presentation did not rotate")
            return
        }
        try await tokens.holdAnswer(Array("{}".utf8), for: first, clientID: "client-a")
        await #expect(throws: GrantError.self) { try await tokens.rotate(first, clientID: "client-b") }
        await tokens.answerSent(for: first)
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(second, clientID: "client-a") }
    }

    @Test func anInvalidTokenIsInvalidGrantAndLeavesNoMark() async throws {
        let store = MemoryStore()
        let tokens = RefreshTokens(store: store, lifetime: .seconds(3600))
        do {
            _ = try await tokens.rotate("not-a-token", clientID: "client-a")
            Issue.record("an unknown token rotated")
        } catch {
            #expect(error == .invalidGrant("the refresh token is invalid or expired"))
        }
        #expect(try await store.get("refresh-answering:\(ClientRegistry.hash("not-a-token"))") == nil)
    }
}
