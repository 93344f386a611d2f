import Foundation
package import HTTPTypes
package import Hummingbird
package import MCPMessages
package import MCPTranslation
package import NIOCore
import NIOFoundationEssentialsCompat

/// The responses every transport writes: JSON answers, SSE streams with keep-alive comments, the
/// 2026-07-28 `subscriptions/listen` stream of a translated server, and the Multi Round-Trip relay
/// for a session-based client of a 2026-07-28 server.
package enum MCPResponses {
    package static let eventStreamHeaders: HTTPFields = [
        .contentType: "text/event-stream",
        .cacheControl: "no-cache",
        SSEHeaders.accelBuffering: "no",
        .connection: "close",
    ]

    package static func jsonResponse(_ bytes: ByteBuffer, headers: HTTPFields) -> Response {
        var fields: HTTPFields = [.contentType: "application/json"]
        fields.append(contentsOf: headers)
        return Response(status: .ok, headers: fields, body: ResponseBody(byteBuffer: bytes))
    }

    /// `subscriptions/listen` for a translated server (a stdio child or a session-based HTTP
    /// upstream): acknowledged with the subset it can announce (its `listChanged` `capabilities`,
    /// and `resourceSubscriptions` it accepted when it declares `resources.subscribe`), then those
    /// notifications as they come through `hub`, until the client closes the stream (or the
    /// server's notification stream ends: then a completion result closes it).
    package static func listen(_ message: JSONRPCMessage, rawID: String?, capabilities: [String: Any], hub: NotificationHub, request: Request, keepAlive: Duration) async -> Response {
        let subscriptionID = rawID ?? "null"
        var acknowledged: [String: Any] = [:]
        var methods: Set<String> = []
        for (field, capability, method) in EraRewrite.listChangedFilters where message.value(at: ["params", "notifications", field]) == "true" {
            if (capabilities[capability] as? [String: Any])?["listChanged"] as? Bool == true {
                acknowledged[field] = true
                methods.insert(method)
            }
        }
        var resources: [String] = []
        if (capabilities["resources"] as? [String: Any])?["subscribe"] as? Bool == true,
           let json = message.value(at: ["params", "notifications", "resourceSubscriptions"]),
           let uris = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String]
        {
            resources = uris
        }
        let (listenerID, notifications, accepted) = await hub.listen(methods: methods, resources: resources, subscriptionID: subscriptionID)
        if message.value(at: ["params", "notifications", "resourceSubscriptions"]) != nil { acknowledged["resourceSubscriptions"] = accepted }
        let ackParams: [String: Any] = ["_meta": [ModernProtocol.metaPrefix + "subscriptionId": (try? JSONSerialization.jsonObject(with: Data(subscriptionID.utf8), options: [.fragmentsAllowed])) ?? NSNull()],
                                        "notifications": acknowledged]
        let ack = (try? JSONSerialization.data(withJSONObject: ["jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": ackParams], options: [.withoutEscapingSlashes])) ?? Data()
        let iterator = IteratorBox(notifications.makeAsyncIterator())
        let completion = ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(subscriptionID),\"result\":{\"resultType\":\"complete\"}}")
        return Self.eventStream(first: ByteBuffer(bytes: ack), request: request, keepAlive: keepAlive, onEnd: { hub.stop(listenerID) }) {
            guard let notification = await iterator.next() else { return nil }
            // nil from the hub: the server's stream ended; the subscription ends gracefully.
            return notification.map { ($0, false) } ?? (completion, true)
        }
    }

    /// Answers a session-based client's request to a 2026-07-28 server: a lone final answer as
    /// JSON; otherwise an SSE stream that carries the server's interim messages live and, when the
    /// server returns an `InputRequiredResult` and the client can answer (`canAsk`), its asks as
    /// server→client requests, the client's answers collected through `asks` and the request
    /// retried through `exchange` until the server completes it (≤ 10 rounds). An ask the client
    /// cannot answer ends in a precise error.
    package static func relayBridged(
        original message: JSONRPCMessage, feed firstFeed: @escaping BridgedMessages, sessionKey sessionID: String, asks: BridgeAsks, canAsk: Bool,
        exchange: @escaping BridgedExchange, onEnd: (@Sendable () -> Void)? = nil
    ) async -> Response {
        guard let first = await firstFeed() else {
            return jsonResponse(JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "the MCP server ended without answering"), headers: [:])
        }
        if first.final, !(canAsk && EraRewrite.isInputRequired(first.bytes)) {
            return jsonResponse(EraRewrite.refusingInputRequired(first.bytes), headers: [:])
        }
        let body = ResponseBody { writer in
            defer { onEnd?() }
            var relay = MultiRoundTripRelay(original: message, canAsk: canAsk)
            var pendingFirst: (bytes: ByteBuffer, final: Bool)? = first
            var feed = firstFeed
            reading: while true {
                let read: (bytes: ByteBuffer, final: Bool)?
                if let held = pendingFirst {
                    read = held
                    pendingFirst = nil
                } else {
                    read = await feed()
                }
                var action = read.map { relay.serverSent($0.bytes, final: $0.final) } ?? relay.serverEnded()
                // Act on what the relay says until it wants the server's next message.
                while true {
                    switch action {
                    case .forward(let bytes):
                        try await writer.write(SSEEncoding.event(id: nil, data: bytes))
                        continue reading
                    case .ask(let askID, let request):
                        let pending = asks.expect(session: sessionID, askID: askID, timeout: .seconds(300))
                        try await writer.write(SSEEncoding.event(id: nil, data: request))
                        var received: ByteBuffer?
                        for await value in pending {
                            received = value
                            break
                        }
                        action = relay.clientAnswered(received)
                    case .retry(let retry):
                        guard let retryMessage = try? JSONRPCMessage(parsing: retry), let next = await exchange(retryMessage) else {
                            action = relay.retryFailed()
                            continue
                        }
                        feed = next
                        continue reading
                    case .finish(let bytes):
                        try await writer.write(SSEEncoding.event(id: nil, data: bytes))
                        break reading
                    }
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: eventStreamHeaders, body: body)
    }

    /// An SSE response to a 2026-07-28 client: `first`, then each event `next` yields until it
    /// says final (or ends), with a keep-alive comment whenever the stream has been quiet for
    /// `keepAlive`; stops at once when the client goes away, and calls `onEnd` either way.
    package static func eventStream(
        first: ByteBuffer, request: Request, keepAlive: Duration, onEnd: (@Sendable () -> Void)? = nil,
        next: @escaping @Sendable () async -> (bytes: ByteBuffer, final: Bool)?
    ) -> Response {
        let body = ResponseBody { writer in
            defer { onEnd?() }
            try await writer.write(SSEEncoding.event(id: nil, data: first))
            // One producer feeds the events and, when the stream is quiet, keep-alive comments.
            let (events, continuation) = AsyncStream<ByteBuffer?>.makeStream()
            let producer = Task {
                while let message = await next() {
                    continuation.yield(SSEEncoding.event(id: nil, data: message.bytes))
                    if message.final { break }
                }
                continuation.finish()
            }
            let ticker = Task {
                while !Task.isCancelled {
                    guard (try? await Task.sleep(for: keepAlive)) != nil else { break }
                    continuation.yield(nil)
                }
            }
            defer {
                ticker.cancel()
                producer.cancel()
            }
            try await request.cancellingOnInboundClose {
                for await event in events {
                    try await writer.write(event ?? ByteBuffer(string: ": keep-alive\n\n"))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: eventStreamHeaders, body: body)
    }
}

/// Headers every SSE response of the gateway carries. SSE bodies are written under Hummingbird's
/// `consumeWithCancellationOnInboundClose` (a client going away cancels the stream at once), which
/// closes the connection when the stream ends; `Connection: close` tells the client so, instead of
/// letting it send its next request on a connection that is about to go.
package enum SSEHeaders {
    /// Tells nginx-style proxies in front not to buffer the stream.
    package static let accelBuffering = HTTPField.Name("X-Accel-Buffering")!
}

/// Reads an MCP request body up to the route's limit (overflow: 413) and checks it is strict JSON (400).
package enum RequestBodyReader {
    package static func read(_ request: inout Request, limit: Int) async throws(GatewayError) -> ByteBuffer {
        if let declared = request.headers.value(of: .contentLength).flatMap({ Int($0) }), declared > limit {
            throw .requestTooLarge(limit: limit)
        }
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw .requestTooLarge(limit: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw .requestTooLarge(limit: limit)
        } catch {
            throw .clientBodyFailed(detail: "\(error)")
        }
        try checkStrictly(body)
        return body
    }

    /// Every client message is read strictly once, before anything looks at it: a body the
    /// gateway and a server could read two ways (duplicate names, bad escapes, lone surrogates,
    /// invalid UTF-8) never gets past the gateway.
    package static func checkStrictly(_ body: ByteBuffer) throws(GatewayError) {
        let violation: StrictJSON.Violation? = body.withUnsafeReadableBytes { buffer in
            do throws(StrictJSON.Violation) { try StrictJSON.validate(buffer) } catch { return error }
            return nil
        }
        if let violation {
            let error = violation
            throw .badRequest(code: JSONRPCErrorResponse.parseError, message: "Parse error: the body is not acceptable JSON: \(error.description)")
        }
    }
}

/// Requests the gateway makes through its own pipeline (a further page of a filtered list) have
/// no client connection of their own to watch: the client's request that caused them is watched
/// by its own answer, and a request body can be iterated only once.
package enum GatewayMadeRequest {
    @TaskLocal package static var isActive = false
}

extension Request {
    /// Runs `operation`, cancelled at once when the client's side of the connection closes (for a
    /// request the gateway made itself: simply runs it).
    package func cancellingOnInboundClose<Value: Sendable>(_ operation: () async throws -> Value) async throws -> Value {
        if GatewayMadeRequest.isActive { return try await operation() }
        return try await body.consumeWithCancellationOnInboundClose { _ in try await operation() }
    }
}
