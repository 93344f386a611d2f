import Foundation
import NIOFoundationEssentialsCompat
package import MCPMessages
package import NIOCore

/// The Multi Round-Trip relay for a session-based client of a 2026-07-28 server, as a value: told
/// what the server sent and what the client answered, it says what to do next; its owner does the
/// I/O (SSE events to the client, waiting for the client's answers, sending the retry).
///
/// The server's interim messages (progress, logs) are forwarded as they come. When its answer is
/// an `InputRequiredResult` and the client declared it can answer (`canAsk`), each of its
/// `inputRequests` becomes a server→client request to the client; with all answers collected, the
/// original request is retried with `inputResponses` and the server's `requestState`. This repeats
/// for at most `maxRounds` rounds; a final answer, or an ask the client cannot or does not answer,
/// ends the relay with one last event.
package struct MultiRoundTripRelay {
    package enum Action: Equatable {
        /// Send the client this event; then read the server's next message.
        case forward(ByteBuffer)
        /// Send the client this request (id `askID`) and wait for its answer, then report it with
        /// `clientAnswered`. Register the wait before sending, so a fast answer is not missed.
        case ask(askID: String, request: ByteBuffer)
        /// Send the server this retry of the original request; report a failure with
        /// `retryFailed`, otherwise read the retry's messages.
        case retry(ByteBuffer)
        /// Send the client this last event and end the stream.
        case finish(ByteBuffer)
    }

    private struct Ask {
        let key: String
        let method: String
        let params: String
    }

    private enum State {
        /// Reading the server's messages for the original request or a retry.
        case relaying
        /// Collecting the client's answers: `waitingFor` was sent, `remaining` follow.
        case asking(waitingFor: Ask, remaining: [Ask], collected: [String: Any], requestState: String?)
        case finished
    }

    package static let maxRounds = 10

    private let original: JSONRPCMessage
    private let canAsk: Bool
    private var state = State.relaying
    /// Rounds of asks started so far.
    package private(set) var round = 0

    package init(original: JSONRPCMessage, canAsk: Bool) {
        self.original = original
        self.canAsk = canAsk
    }

    /// The server sent `bytes`; `final` when it is its answer to the (retried) request.
    package mutating func serverSent(_ bytes: ByteBuffer, final: Bool) -> Action {
        guard case .relaying = state else { return finish(error: "the MCP server sent a message out of turn") }
        guard final else { return .forward(bytes) }
        guard canAsk, EraRewrite.isInputRequired(bytes), round < Self.maxRounds,
              let result = try? JSONRPCMessage(parsing: bytes), let requestsJSON = result.value(at: ["result", "inputRequests"]),
              let inputRequests = (try? JSONSerialization.jsonObject(with: Data(requestsJSON.utf8))) as? [String: Any]
        else {
            state = .finished
            return .finish(EraRewrite.refusingInputRequired(bytes))
        }
        round += 1
        let asks = inputRequests.sorted { $0.key < $1.key }.compactMap { key, value -> Ask? in
            guard let ask = value as? [String: Any], let method = ask["method"] as? String else { return nil }
            let params = ask["params"].flatMap { try? JSONSerialization.data(withJSONObject: $0, options: [.withoutEscapingSlashes]) }.map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return Ask(key: key, method: method, params: params)
        }
        return nextAsk(asks, collected: [:], requestState: result.string(at: ["result", "requestState"]))
    }

    /// The server's stream ended without an answer.
    package mutating func serverEnded() -> Action {
        finish(error: "the MCP server ended without answering")
    }

    /// The client's answer to the last `ask` (nil: none came in time).
    package mutating func clientAnswered(_ reply: ByteBuffer?) -> Action {
        guard case .asking(let ask, let remaining, var collected, let requestState) = state else {
            return finish(error: "an answer arrived that no ask waited for")
        }
        guard let reply, let object = (try? JSONSerialization.jsonObject(with: Data(buffer: reply))) as? [String: Any], let value = object["result"] else {
            return finish(error: "the client did not answer the server's \(ask.method)")
        }
        collected[ask.key] = value
        return nextAsk(remaining, collected: collected, requestState: requestState)
    }

    /// The retry could not be sent.
    package mutating func retryFailed() -> Action {
        finish(error: "the MCP server could not be reached for the retry")
    }

    private mutating func nextAsk(_ asks: [Ask], collected: [String: Any], requestState: String?) -> Action {
        if let ask = asks.first {
            state = .asking(waitingFor: ask, remaining: Array(asks.dropFirst()), collected: collected, requestState: requestState)
            let askID = "\"mcp-gateway-ask-\(round)-\(ask.key.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "k")\""
            let request = "{\"jsonrpc\":\"2.0\",\"id\":\(askID),\"method\":\(JSONRPCErrorResponse.jsonString(ask.method)),\"params\":\(ask.params)}"
            return .ask(askID: askID, request: ByteBuffer(string: request))
        }
        // Every answer collected: the same request again, with the answers and the server's state.
        guard let retry = original.editing("params", { params in
            params["inputResponses"] = collected
            params["requestState"] = requestState.map { $0 as Any }
        }) else {
            return retryFailed()
        }
        state = .relaying
        return .retry(retry.bytes)
    }

    private mutating func finish(error message: String) -> Action {
        state = .finished
        return .finish(JSONRPCErrorResponse.make(rawID: original.rawID, code: JSONRPCErrorResponse.internalError, message: message))
    }
}
