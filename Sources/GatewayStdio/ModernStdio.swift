package import MCPTransport
package import GatewayAuth
import NIOFoundationEssentialsCompat
import Crypto
import AuthorizationServer
import Foundation
import GatewayConfig
import HTTPTypes
package import Hummingbird
import Logging
package import MCPMessages
import MCPTranslation
import NIOCore
import Synchronization

/// 2026-07-28 (stateless) requests on a stdio route. Each request stands alone: no session id, the
/// client's version, capabilities and identity ride in `_meta` and in `Mcp-*` headers, which must
/// agree with the body. The gateway serves them from children it starts itself, learning each
/// one's era (`server/discover` first): modern children get requests as they are; session-based
/// ones are initialized by the gateway and translated for (modern `_meta` out, `resultType` in,
/// asks as Multi Round-Trip Requests, list changes for `subscriptions/listen`). Children are pooled
/// per identity (never shared between users unless `isolation: shared`), with JSON-RPC ids
/// remapped so many requests can share one child.
extension StdioBridge {
    package func handleModern(_ exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> Response {
        let (request, context, route, verified, call) = (exchange.request, exchange.context, exchange.route, exchange.caller, exchange.call)
        // Read in place with the scanner: no decoding of the body on the hot path.
        var message = try ModernProtocol.validate(call, request: request)
        let rawID = message.rawID
        let method = message.method ?? ""

        let service = manager.service
        let subject = verified?.claims.sub
        let identity = service.passIdentity ? verified.map(Self.identityEnvironment) : nil
        // The caller itself (router and subject), whatever pool serves it: parked requests, request
        // states and cancellations belong to it alone, even on a child several callers share.
        let requester = SessionOwner(route: route, caller: verified).key
        // A retry of a request a 2026-07-28 child answered with an InputRequiredResult goes back to
        // that child: its requestState may be sealed with that process's own key.
        var returning: PoolChild?
        let presentedState = message.string(at: ["params", "requestState"])
        // A stopping instance: requests standing alone go to a serving one (retries of asks
        // parked here stay, as does anything forwarded here already).
        if presentedState == nil, let elsewhere = await locator.elsewhereForNewSession(atHopLimit: context.atHopLimit || context.forwarded) { throw elsewhere }
        if let state = presentedState, RequestStateRouting.local(state).hasPrefix(RequestStateAffinity.prefix) {
            guard let (sessionID, original) = RequestStateAffinity.parse(state, requester: requester),
                  let child = manager.poolChild(subject: subject, scope: exchange.memberScope, sessionID: sessionID), child.modern,
                  let restored = RequestStateAffinity.restoring(message, state: original)
            else {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.invalidParams, message: "requestState belongs to an MCP server process that has ended; send the request again without it", rawID: rawID)
            }
            returning = child
            message = restored
        }
        let entry: PoolChild
        if let returning {
            entry = returning
        } else {
            do { entry = try await manager.poolChild(subject: subject, scope: exchange.memberScope, identity: identity) } catch { throw GatewayError(error, service: service.name) }
        }

        if method == "server/discover" {
            return MCPResponses.jsonResponse(EraRewrite.discoverResponse(rawID: rawID, initializeResult: entry.initializeResult, modern: entry.modern), headers: [:])
        }
        if entry.modern {
            // The gateway tags every requestState a modern child hands out with its caller: an
            // untagged one is not this caller's to present (on a shared child it could be another's).
            if presentedState != nil, returning == nil {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.invalidParams, message: "requestState is unknown, expired or was issued to another user; send the request again without it", rawID: rawID)
            }
            // A modern child: the request as the client sent it, the answers as the child wrote them.
            if method == "subscriptions/listen" {
                // The child names the subscription by the id the gateway gave the request: the
                // client gets its own back. A child that goes away completes the subscription.
                let session = entry.session
                let clientID = rawID ?? "null"
                return try await forward(message, request: request, context: context, entry: entry, service: service, rawID: rawID, origin: requester) { bytes, final in
                    if final, case .closed = session.phase, (try? JSONRPCMessage(parsing: bytes))?.kind == .errorResponse {
                        return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(clientID),\"result\":{\"resultType\":\"complete\"}}")
                    }
                    guard !final, let notification = try? JSONRPCMessage(parsing: bytes) else { return bytes }
                    return NotificationHub.stamped(notification, subscriptionID: clientID)
                }
            }
            let sessionID = entry.session.sessionID ?? ""
            return try await forward(message, request: request, context: context, entry: entry, service: service, rawID: rawID, origin: requester) { bytes, final in
                final && EraRewrite.isInputRequired(bytes) ? RequestStateAffinity.tagging(bytes, sessionID: sessionID, requester: requester) : bytes
            }
        }
        if method == "subscriptions/listen", let hub = entry.hub {
            let capabilities = entry.initializeResult["capabilities"]?.value as? [String: Any] ?? [:]
            return await MCPResponses.listen(message, rawID: rawID, capabilities: capabilities, hub: hub, request: request, keepAlive: service.sseKeepAlive)
        }
        // A retry carrying `requestState`: the answers go to the child's waiting asks, and the
        // original request's outcome answers this one.
        if let token = message.string(at: ["params", "requestState"]) {
            guard let parked = inputRequired.take(token: token, owner: requester) else {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.invalidParams, message: "requestState is unknown, expired or was issued to another user; send the request again without it", rawID: rawID)
            }
            let answer = ModernProtocol.answerToAsk(id: parked.childID, from: message)
            do { try parked.session.sendNotifications([try JSONRPCMessage(parsing: answer)]) } catch {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
            }
            return await driveTranslated(parked.session, parked.subscription, parked.iterator, request: request, context: context, rawID: rawID, method: method,
                                         owner: requester, capabilities: message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"]),
                                         keepAliveInterval: service.sseKeepAlive)
        }
        // The child speaks the session-based protocol: it gets the request without the modern
        // `_meta` keys (spliced out; rewritten only when `_meta` also holds other keys).
        let capabilities = message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"])
        guard let message = message.removingParamsMeta(ifOnlyKeysWithPrefix: ModernProtocol.metaPrefix) ?? EraRewrite.withoutModernMeta(message) else {
            return ModernProtocol.error(.badRequest, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request", rawID: rawID)
        }
        guard message.isRequest else {
            do { try entry.session.sendNotifications([message], origin: requester) } catch {}
            return Response(status: .accepted)
        }
        let subscription: LegacySession.Subscription
        do { subscription = try entry.session.sendRequests([message], timeout: service.requestTimeout, origin: requester) } catch {
            return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
        }
        return await driveTranslated(entry.session, subscription, IteratorBox(subscription.items.makeAsyncIterator()), request: request, context: context,
                                     rawID: rawID, method: method, owner: requester, capabilities: capabilities, keepAliveInterval: service.sseKeepAlive)
    }

    private func forward(
        _ message: JSONRPCMessage, request: Request, context: TransportContext, entry: PoolChild, service: StdioServiceConfiguration,
        rawID: String?, origin: String, transform: (@Sendable (ByteBuffer, Bool) -> ByteBuffer)?
    ) async throws(GatewayError) -> Response {
        do {
            guard message.isRequest else {
                try entry.session.sendNotifications([message], origin: origin)
                return Response(status: .accepted)
            }
            let subscription = try entry.session.sendRequests([message], timeout: service.requestTimeout, origin: origin)
            // Closing the response stream cancels the request: the child hears of it at once.
            let session = entry.session
            let watcher = InboundCloseWatcher.watcher(for: context.channel)
            let token = watcher?.onClose { session.cancelRequests(of: subscription, reason: "the client closed the response stream") }
            let onEnd: @Sendable () -> Void = {
                watcher?.cancel(token)
                session.cancelRequests(of: subscription, reason: "the client closed the response stream")
            }
            // A child that goes away mid-request still leaves the client an answer: a listen
            // subscription completes, anything else fails with a retryable error.
            let endedEarly = message.method == "subscriptions/listen"
                ? ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":{\"resultType\":\"complete\"}}")
                : JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request")
            let items = IteratorBox(subscription.items.makeAsyncIterator())
            let next: @Sendable () async -> (bytes: ByteBuffer, final: Bool)? = {
                // The stream is read only up to its answer, so an end here comes before one.
                guard case .message(_, let bytes, let isFinal)? = await items.next() else { return (endedEarly, true) }
                return (transform?(bytes, isFinal) ?? bytes, isFinal)
            }
            let finish: @Sendable () -> Void = {
                session.readerStopped(subscription)
                onEnd()
            }
            guard let first = await next() else { return Response(status: .accepted) }
            if first.final {
                finish()
                return MCPResponses.jsonResponse(first.bytes, headers: [:])
            }
            // Progress and other interim messages as they come, with keep-alive comments when quiet.
            return MCPResponses.eventStream(first: first.bytes, request: request, keepAlive: service.sseKeepAlive, onEnd: finish, next: next)
        } catch {
            return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
        }
    }

}

extension StdioBridge {
    /// A session-based client's `initialize` to a 2026-07-28-only child: answered by the gateway
    /// from the child's `server/discover`; the session then stamps `_meta` on every request.
    /// `discovered`: the child's DiscoverResult when it was started with `server/discover` (a child
    /// that answered initialize's refusal is asked on the same process otherwise).
    package func initializeForModernChild(
        _ message: JSONRPCMessage, session: LegacySession, manager: StdioSessionManager, caller: String?, owner: SessionOwner, discovered: [String: Any]? = nil,
        resuming: String? = nil
    ) async throws(GatewayError) -> Response {
        let requested = message.string(at: ["params", "protocolVersion"]) ?? "2025-11-25"
        let version = Self.supportedVersions.contains(requested) ? requested : Self.supportedVersions[Self.supportedVersions.count - 1]
        let sessionID = manager.activate(session, protocolVersion: version, owner: caller, resuming: resuming)
        let discoverResult: [String: Any]
        if let discovered {
            discoverResult = discovered
        } else { do {
            let probe = try session.sendRequests([try JSONRPCMessage(parsing: EraRewrite.discoverProbe)], timeout: manager.service.startTimeout)
            guard let answer = await session.finalAnswer(of: probe), let object = (try? JSONSerialization.jsonObject(with: Data(buffer: answer))) as? [String: Any],
                  let result = object["result"] as? [String: Any]
            else { throw GatewayError.stdioStartFailed(service: manager.service.name, detail: "the MCP server refused initialize and server/discover") }
            discoverResult = result
        } catch {
            await manager.end(sessionID: sessionID, reason: "neither initialize nor server/discover succeeded")
            if let gatewayError = error as? GatewayError { throw gatewayError }
            throw .stdioStartFailed(service: manager.service.name, detail: "\(error)")
        } }
        if resuming == nil {
            do {
                try await bindings.bind(sessionID, to: owner, details: Self.details(of: message, service: manager.service.name, version: version))
            } catch {
                await manager.end(sessionID: sessionID, reason: "the session could not be recorded")
                throw GatewayError(error)
            }
        }
        session.modernMeta = ModernProtocol.clientStamp(from: message)
        return MCPResponses.jsonResponse(ModernProtocol.initializeAnswer(to: message, discover: discoverResult, fallbackName: manager.service.name), headers: [Self.sessionHeader: sessionID])
    }

}

/// A translated child's request waiting for the client's answer to its ask.
package struct ParkedChildAsk: Sendable {
    package let session: LegacySession
    package let subscription: LegacySession.Subscription
    package let iterator: IteratorBox<StreamItem>
    /// The child's id of its ask (raw JSON).
    package let childID: String
}

extension StdioBridge {

    /// Relays a translated child's answer to a 2026-07-28 client: progress and other notifications
    /// as SSE events while they come; the final result (with `resultType`); or, when the child asks
    /// the client something, an `InputRequiredResult` whose `requestState` parks the request.
    package func driveTranslated(
        _ session: LegacySession, _ subscription: LegacySession.Subscription, _ iterator: IteratorBox<StreamItem>, request: Request, context: TransportContext,
        rawID: String?, method: String, owner: String, capabilities: String?, keepAliveInterval: Duration = .seconds(15)
    ) async -> Response {
        let transform = EraRewrite.completeResult(for: method)
        let parkedFlag = ParkedFlag()
        // Closing the response stream cancels the request, unless it was parked for a retry.
        let watcher = InboundCloseWatcher.watcher(for: context.channel)
        let token = watcher?.onClose { if !parkedFlag.value { session.cancelRequests(of: subscription, reason: "the client closed the response stream") } }
        let finish: @Sendable () -> Void = {
            watcher?.cancel(token)
            if !parkedFlag.value {
                session.readerStopped(subscription)
                session.cancelRequests(of: subscription, reason: "the client closed the response stream")
            }
        }
        let store = inputRequired
        /// The next message to send the client, or nil when the stream ended without an answer.
        let next: @Sendable () async -> (bytes: ByteBuffer, final: Bool)? = {
            while let item = await iterator.next() {
                guard case .message(_, let bytes, let isFinal) = item else { return nil }
                if isFinal {
                    let answer = (try? JSONRPCMessage(parsing: bytes))?.replacingID(with: rawID ?? "null") ?? bytes
                    return (transform(answer, true), true)
                }
                guard let ask = try? JSONRPCMessage(parsing: bytes), ask.isRequest, let askMethod = ask.method, let childID = ask.rawID else {
                    return (bytes, false)
                }
                // Capabilities are read only when the child asks (not on every request).
                guard let capability = EraRewrite.askCapabilities[askMethod], ModernProtocol.declaredCapabilities(capabilities).contains(capability) else {
                    // The client cannot answer this kind of ask: the child hears so at once.
                    let refusal = JSONRPCErrorResponse.make(rawID: childID, code: JSONRPCErrorResponse.methodNotFound, message: "the client did not declare support for \(askMethod)")
                    try? session.sendNotifications([try JSONRPCMessage(parsing: refusal)])
                    continue
                }
                parkedFlag.set()
                let handle = store.park(ParkedChildAsk(session: session, subscription: subscription, iterator: iterator, childID: childID), owner: owner)
                return (ModernProtocol.inputRequiredResponse(rawID: rawID, askMethod: askMethod, askParams: ask.value(at: ["params"]) ?? "{}", requestState: handle), true)
            }
            return nil
        }
        guard let first = await next() else {
            finish()
            return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.internalError, message: "the session ended"), headers: [:])
        }
        if first.final {
            finish()
            return MCPResponses.jsonResponse(first.bytes, headers: [:])
        }
        return MCPResponses.eventStream(first: first.bytes, request: request, keepAlive: keepAliveInterval, onEnd: finish, next: next)
    }
}

extension StdioBridge {

    /// A session-based client's request to a 2026-07-28 child: the child's interim messages
    /// (progress, logs) reach the client as they come; when the child answers with an
    /// `InputRequiredResult`, its asks go to the client as server→client requests on this
    /// response's SSE stream, the client's answers come back in its session, and the request is
    /// retried with `inputResponses` (and `requestState`) until the child completes it.
    package func relayingInputRequired(_ message: JSONRPCMessage, request: Request, session: LegacySession, sessionID: String, stamp: String, timeout: Duration?) async -> Response {
        // Streams still being read; released when the client goes away mid-way too.
        let reading = Mutex<[LegacySession.Subscription]>([])
        let exchange: BridgedExchange = { outgoing in
            guard let subscription = try? session.sendRequests([outgoing], timeout: timeout) else { return nil }
            reading.withLock { $0.append(subscription) }
            let items = IteratorBox(subscription.items.makeAsyncIterator())
            let release: @Sendable () -> Void = {
                reading.withLock { $0.removeAll { $0.streamID == subscription.streamID } }
                session.readerStopped(subscription)
            }
            return {
                guard case .message(_, let bytes, let isFinal)? = await items.next() else {
                    release()
                    return nil
                }
                if isFinal { release() }
                return (bytes, isFinal)
            }
        }
        guard let feed = await exchange(message) else {
            return MCPResponses.jsonResponse(JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "the session ended"), headers: [:])
        }
        return await MCPResponses.relayBridged(original: message, feed: feed, sessionKey: sessionID, asks: bridgeAsks, canAsk: true, exchange: exchange) {
            for subscription in reading.withLock({ $0 }) { session.readerStopped(subscription) }
        }
    }
}

