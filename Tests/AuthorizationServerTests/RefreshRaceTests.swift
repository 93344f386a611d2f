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
