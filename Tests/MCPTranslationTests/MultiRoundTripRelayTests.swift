import Foundation
import MCPMessages
import MCPTranslation
import NIOCore
import NIOFoundationEssentialsCompat
import Testing

/// The relay loop on values: what the server sends and the client answers in, actions out.
@Suite struct MultiRoundTripRelayTests {
    static let call = try! JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"book","arguments":{}}}"#)

    static func inputRequired(_ asks: [String: String], state: String? = "s1") -> ByteBuffer {
        let requests = asks.map { key, method in "\"\(key)\":{\"method\":\"\(method)\",\"params\":{\"message\":\"?\"}}" }.joined(separator: ",")
        let stateMember = state.map { ",\"requestState\":\"\($0)\"" } ?? ""
        return ByteBuffer(string: #"{"jsonrpc":"2.0","id":"u1","result":{"resultType":"input_required","inputRequests":{"# + requests + "}" + stateMember + "}}")
    }

    static let done = ByteBuffer(string: #"{"jsonrpc":"2.0","id":5,"result":{"content":[],"resultType":"complete"}}"#)

    static func object(_ bytes: ByteBuffer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] ?? [:]
    }

    static func answer(_ askID: String, _ result: String) -> ByteBuffer {
        ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(askID),\"result\":\(result)}")
    }

    @Test func interimMessagesGoOutAndTheFinalAnswerEnds() {
        var relay = MultiRoundTripRelay(original: Self.call, canAsk: true)
        let progress = ByteBuffer(string: #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#)
        #expect(relay.serverSent(progress, final: false) == .forward(progress))
        #expect(relay.serverSent(Self.done, final: true) == .finish(Self.done))
        #expect(relay.round == 0)
    }

    @Test func asksGoToTheClientOneByOneThenTheRequestIsRetriedWithTheAnswers() throws {
        var relay = MultiRoundTripRelay(original: Self.call, canAsk: true)
        guard case .ask(let firstID, let firstRequest) = relay.serverSent(Self.inputRequired(["a": "elicitation/create", "b": "roots/list"]), final: true) else {
            Issue.record("expected an ask")
            return
        }
        #expect(Self.object(firstRequest)["method"] as? String == "elicitation/create")
        guard case .ask(let secondID, let secondRequest) = relay.clientAnswered(Self.answer(firstID, #"{"action":"accept"}"#)) else {
            Issue.record("expected the second ask")
            return
        }
        #expect(secondID != firstID)
        #expect(Self.object(secondRequest)["method"] as? String == "roots/list")
        guard case .retry(let retry) = relay.clientAnswered(Self.answer(secondID, #"{"roots":[]}"#)) else {
            Issue.record("expected the retry")
            return
        }
        let params = try #require(Self.object(retry)["params"] as? [String: Any])
        #expect(params["requestState"] as? String == "s1")
        #expect(params["name"] as? String == "book")
        let responses = try #require(params["inputResponses"] as? [String: Any])
        #expect((responses["a"] as? [String: Any])?["action"] as? String == "accept")
        #expect(responses["b"] != nil)
        #expect(Self.object(retry)["id"] as? Int == 5)
        // The retry's answer completes the request.
        #expect(relay.serverSent(Self.done, final: true) == .finish(Self.done))
        #expect(relay.round == 1)
    }

    @Test func roundsAreBounded() {
        var relay = MultiRoundTripRelay(original: Self.call, canAsk: true)
        for _ in 0..<MultiRoundTripRelay.maxRounds {
            guard case .ask(let askID, _) = relay.serverSent(Self.inputRequired(["a": "elicitation/create"]), final: true),
                  case .retry = relay.clientAnswered(Self.answer(askID, "{}"))
            else {
                Issue.record("round \(relay.round) did not ask and retry")
                return
            }
        }
        // One more InputRequiredResult: refused as an error instead of asking forever.
        guard case .finish(let last) = relay.serverSent(Self.inputRequired(["a": "elicitation/create"]), final: true) else {
            Issue.record("expected the relay to end")
            return
        }
        #expect((Self.object(last)["error"] as? [String: Any])?["code"] != nil)
        #expect(relay.round == MultiRoundTripRelay.maxRounds)
    }

    @Test func aClientThatCannotAskGetsAnErrorNotAnInputRequiredResult() {
        var relay = MultiRoundTripRelay(original: Self.call, canAsk: false)
        guard case .finish(let last) = relay.serverSent(Self.inputRequired(["a": "sampling/createMessage"]), final: true) else {
            Issue.record("expected the relay to end")
            return
        }
        let error = Self.object(last)["error"] as? [String: Any]
        #expect((error?["message"] as? String)?.contains("sampling/createMessage") == true)
    }

    @Test func silenceAndFailuresEndWithAnErrorForTheOriginalID() {
        var unanswered = MultiRoundTripRelay(original: Self.call, canAsk: true)
        _ = unanswered.serverSent(Self.inputRequired(["a": "elicitation/create"]), final: true)
        guard case .finish(let timeout) = unanswered.clientAnswered(nil) else {
            Issue.record("expected the relay to end")
            return
        }
        #expect(Self.object(timeout)["id"] as? Int == 5)
        #expect(((Self.object(timeout)["error"] as? [String: Any])?["message"] as? String)?.contains("did not answer") == true)

        var ended = MultiRoundTripRelay(original: Self.call, canAsk: true)
        guard case .finish(let gone) = ended.serverEnded() else {
            Issue.record("expected the relay to end")
            return
        }
        #expect(Self.object(gone)["id"] as? Int == 5)

        var unreachable = MultiRoundTripRelay(original: Self.call, canAsk: true)
        guard case .ask(let askID, _) = unreachable.serverSent(Self.inputRequired(["a": "elicitation/create"]), final: true),
              case .retry = unreachable.clientAnswered(Self.answer(askID, "{}")),
              case .finish = unreachable.retryFailed()
        else {
            Issue.record("expected ask, retry, then the end")
            return
        }
        // An answer nobody asked for does not restart anything.
        guard case .finish = unreachable.clientAnswered(Self.answer(askID, "{}")) else {
            Issue.record("an unexpected answer must end the relay")
            return
        }
    }
}
