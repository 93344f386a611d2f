import GatewayStore
import Testing

@testable import AuthorizationServer

/// A racer arrives when its claim of the answering mark fails. On a loaded instance the first
/// presentation may hold its answer, send it and remove the mark before the racer looks: the
/// racer still gets the answer (a client racing its own refreshes must not lose its sign-in).
@Suite struct RefreshRaceTests {
    /// The first presentation rotated, held its answer for `client-a` and sent it (mark gone).
    static func answeredFirst() async throws -> (RefreshTokens, String, [UInt8]) {
        let tokens = RefreshTokens(store: MemoryStore(), lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        guard case .rotated(_, let second, _) = try await tokens.rotate(first, clientID: "client-a") else {
            Issue.record("the first presentation did not rotate")
            return (tokens, first, [])
        }
        let answer = Array(#"{"refresh_token":"\#(second)"}"#.utf8)
        try await tokens.holdAnswer(answer, for: first, clientID: "client-a")
        await tokens.answerSent(for: first)
        return (tokens, first, answer)
    }

    @Test func aRacerWhoseClaimFailedGetsTheAnswerSentSince() async throws {
        let (tokens, first, answer) = try await Self.answeredFirst()
        let held = try await tokens.racingAnswer(token: first, hash: ClientRegistry.hash(first), clientID: "client-a")
        #expect(held == answer)
    }

    @Test func aRacerOfAnotherClientGetsNothingEvenAfterTheAnswerWasSent() async throws {
        let (tokens, first, _) = try await Self.answeredFirst()
        #expect(try await tokens.racingAnswer(token: first, hash: ClientRegistry.hash(first), clientID: "client-b") == nil)
    }

    @Test func aRacerOfARefusedPresentationGetsNothing() async throws {
        let tokens = RefreshTokens(store: MemoryStore(), lifetime: .seconds(3600))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        _ = try await tokens.rotate(first, clientID: "client-a")
        // Refused after the rotation (say, a resource it does not serve): no answer is held.
        await tokens.answerSent(for: first)
        #expect(try await tokens.racingAnswer(token: first, hash: ClientRegistry.hash(first), clientID: "client-a") == nil)
    }

    @Test func aLatePresentationIsStillReuse() async throws {
        let (tokens, first, _) = try await Self.answeredFirst()
        // Its claim succeeds (the mark is gone): the token is gone too, and the family with it.
        await #expect(throws: GrantError.self) { try await tokens.rotate(first, clientID: "client-a") }
    }
}

/// `auth.refreshReuseGrace`: a racer the network delays past the first answer is not a thief.
@Suite struct RefreshReuseGraceTests {
    /// A rotation answered and sent for `client-a`, on a store whose clock the test moves.
    static func answered(grace: Duration) async throws -> (RefreshTokens, TestClock, MemoryStore, first: String, second: String, answer: [UInt8]) {
        let clock = TestClock()
        let store = MemoryStore(now: { clock.now })
        let tokens = RefreshTokens(store: store, lifetime: .seconds(3600), reuseGrace: grace)
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        guard case .rotated(_, let second, _) = try await tokens.rotate(first, clientID: "client-a") else {
            Issue.record("the first presentation did not rotate")
            return (tokens, clock, store, first, "", [])
        }
        let answer = Array(#"{"refresh_token":"\#(second)"}"#.utf8)
        try await tokens.holdAnswer(answer, for: first, clientID: "client-a")
        await tokens.answerSent(for: first, heldFor: "client-a")
        return (tokens, clock, store, first, second, answer)
    }

    @Test func theSameClientWithinTheGraceGetsTheSameAnswer() async throws {
        let (tokens, clock, _, first, second, answer) = try await Self.answered(grace: .seconds(10))
        clock.advance(.seconds(9))
        for _ in 0..<2 {
            guard case .racing(let repeated) = try await tokens.rotate(first, clientID: "client-a") else {
                Issue.record("a presentation within the grace rotated again")
                return
            }
            #expect(repeated == answer)
        }
        // The family lives: the answer's token rotates.
        _ = try await tokens.rotateAnswered(second, clientID: "client-a")
    }

    @Test func anotherClientWithinTheGraceIsTheft() async throws {
        let (tokens, _, _, first, second, _) = try await Self.answered(grace: .seconds(10))
        await #expect(throws: GrantError.invalidGrant("the refresh token was already used; every token of this sign-in is now revoked")) {
            try await tokens.rotate(first, clientID: "client-b")
        }
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(second, clientID: "client-a") }
        // And the thief's failure ended the grace for the owner too: the family is gone.
        await #expect(throws: GrantError.self) { try await tokens.rotate(first, clientID: "client-a") }
    }

    @Test func afterTheGraceThePresentationIsReuse() async throws {
        let (tokens, clock, _, first, second, _) = try await Self.answered(grace: .seconds(10))
        clock.advance(.seconds(10) + .milliseconds(1))
        await #expect(throws: GrantError.invalidGrant("the refresh token was already used; every token of this sign-in is now revoked")) {
            try await tokens.rotate(first, clientID: "client-a")
        }
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(second, clientID: "client-a") }
    }

    @Test func noGraceMeansTheFirstRepeatIsReuse() async throws {
        let (tokens, _, _, first, second, _) = try await Self.answered(grace: .zero)
        await #expect(throws: GrantError.self) { try await tokens.rotate(first, clientID: "client-a") }
        await #expect(throws: GrantError.self) { try await tokens.rotateAnswered(second, clientID: "client-a") }
    }

    @Test func aRefusalGivesNoGrace() async throws {
        let clock = TestClock()
        let tokens = RefreshTokens(store: MemoryStore(now: { clock.now }), lifetime: .seconds(3600), reuseGrace: .seconds(10))
        let first = try await tokens.issue(grant, family: RefreshTokens.newFamily())
        _ = try await tokens.rotate(first, clientID: "client-a")
        // Refused after the rotation (a resource it does not serve): nothing held, no grace.
        await tokens.answerSent(for: first)
        await #expect(throws: GrantError.self) { try await tokens.rotate(first, clientID: "client-a") }
    }

    @Test func theHeldAnswerOutlivesTheGrace() async throws {
        let (_, _, store, first, _, _) = try await Self.answered(grace: .seconds(40))
        let hash = ClientRegistry.hash(first)
        let mark = try #require(try await store.timeToLive("refresh-answering:\(hash)"))
        let held = try #require(try await store.timeToLive("refresh-held:\(hash)"))
        #expect(mark <= .seconds(40) && mark > .seconds(39))
        #expect(held > mark)
        // The mark names the client the grace is for, as while answering.
        #expect(try await store.getString("refresh-answering:\(hash)") == "client-a")
    }
}
