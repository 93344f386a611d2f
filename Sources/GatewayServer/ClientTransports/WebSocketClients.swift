import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayConfig
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
import MCPTransport
import NIOCore
import NIOHTTPTypes
import NIOWebSocket
import Synchronization

/// MCP over WebSocket on every MCP endpoint: an HTTP/1.1 upgrade (subprotocol `mcp`) of a GET to
/// the router's `mcpPath`, one JSON-RPC message per text frame, pings every 30 s. The connection is
/// one session: it drives a session-based session of the gateway's own (`BridgedSession`), so
/// server→client requests and notifications flow on it, and every message goes through the whole
/// pipeline with the upgrade request's credentials. Those are checked before the upgrade, by the
/// same stages as any request (route, Host, Origin, authentication); a request they refuse is not
/// upgraded (an empty 400; the log says why). A browser cannot set `Authorization` on a
/// WebSocket: the token may come as a subprotocol `bearer.<token>` instead (never echoed back).
///
/// The upgraded connection is served by a channel handler (`WebSocketSession`) on NIO's frame
/// codec: no task waits for its frames, and its pings are timers of its event loop.
struct WebSocketClients: Sendable {
    static let subprotocol = "mcp"
    static let bearerPrefix = "bearer."
    /// A ping this often; a peer that has not answered the last one by the next is gone.
    static let pingInterval = TimeAmount.seconds(30)
    /// The largest frame read (a message may span frames, up to the route's body limit).
    static let maxFrameSize = 4 << 20
    /// A session holds at most this many of its client's requests at once: one more is answered
    /// at once with a JSON-RPC error (`busyCode`) and not sent on. Notifications and answers (a
    /// cancellation among them) always go on. The socket is read on, so that a close is seen.
    static let maxRequestsInFlight = 64
    /// Server error (JSON-RPC's implementation-defined range): too many requests in flight.
    static let busyCode = -32001

    let sessions: SessionCount

    /// Live WebSocket sessions, across entry points.
    final class SessionCount: Sendable {
        private let count = Mutex(0)
        /// `limits.webSocketSessions`: beyond it an upgrade gets 503.
        let limit: Int

        init(limit: Int) {
            self.limit = limit
        }

        func admit() -> Bool { count.withLock { guard $0 < limit else { return false }; $0 += 1; return true } }
        func release() { count.withLock { $0 -= 1 } }
        var current: Int { count.withLock { $0 } }
    }

    /// The upgrade request as the pipeline's stages and the inner requests see it: a token sent as
    /// a `bearer.<token>` subprotocol becomes the `Authorization` header.
    static func credentialed(_ head: HTTPRequest) -> (head: HTTPRequest, offersMCP: Bool, offersAny: Bool) {
        var head = head
        let offered = head.headerFields[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        if head.headerFields[.authorization] == nil, let bearer = offered.first(where: { $0.hasPrefix(bearerPrefix) }) {
            head.headerFields[.authorization] = "Bearer " + bearer.dropFirst(bearerPrefix.count)
        }
        head.headerFields[.secWebSocketProtocol] = nil
        return (head, offered.contains(subprotocol), !offered.isEmpty)
    }
}

/// The WebSocket protocol of one session's connection (RFC 6455) as a value: each frame read,
/// each keep-alive tick and each close the gateway starts becomes what the connection's handler
/// does. Fragmented messages are joined up to the route's body limit (1009 beyond it); a ping is
/// answered with its payload; a close is answered with its code and the connection closed; a
/// peer that has not answered the last keep-alive ping by the next tick is gone (1001).
struct WebSocketProtocolState {
    enum Action: Equatable {
        case none
        /// A whole message from the client.
        case deliver(ByteBuffer)
        case pong(ByteBuffer)
        case ping
        /// Send a close frame with this code, then close the connection.
        case close(WebSocketErrorCode)
        /// The peer answered the gateway's close: close the connection.
        case closeConnection
    }

    /// The largest message (the route's `maxRequestBodySize`).
    let maxMessageBytes: Int
    /// A close frame was sent: nothing more is, and what the client sends is dropped.
    private(set) var closing = false
    /// A message whose first frames arrived (their payloads, joined).
    private var fragments: ByteBuffer?
    private var awaitingPong = false

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    mutating func read(_ frame: WebSocketFrame) -> Action {
        switch frame.opcode {
        case .text, .binary:
            guard fragments == nil else { return close(.protocolError) }
            let payload = frame.unmaskedData
            guard payload.readableBytes <= maxMessageBytes else { return close(.messageTooLarge) }
            guard frame.fin else {
                fragments = payload
                return .none
            }
            return closing ? .none : .deliver(payload)
        case .continuation:
            guard var joined = fragments else { return close(.protocolError) }
            var payload = frame.unmaskedData
            guard joined.readableBytes + payload.readableBytes <= maxMessageBytes else { return close(.messageTooLarge) }
            joined.writeBuffer(&payload)
            guard frame.fin else {
                fragments = joined
                return .none
            }
            fragments = nil
            return closing ? .none : .deliver(joined)
        case .ping:
            return closing ? .none : .pong(frame.unmaskedData)
        case .pong:
            awaitingPong = false
            return .none
        case .connectionClose:
            // The answer to the gateway's own close completes the handshake; the peer's own close
            // is answered with its code (RFC 6455 §5.5.1).
            guard !closing else { return .closeConnection }
            var data = frame.unmaskedData
            return close(data.readWebSocketErrorCode() ?? .normalClosure)
        default:
            return close(.protocolError)
        }
    }

    /// Every `WebSocketClients.pingInterval`.
    mutating func keepAliveTick() -> Action {
        guard !closing else { return .none }
        guard !awaitingPong else { return close(.goingAway) }
        awaitingPong = true
        return .ping
    }

    /// The gateway closes the session (once).
    mutating func close(_ code: WebSocketErrorCode) -> Action {
        guard !closing else { return .none }
        closing = true
        fragments = nil
        return .close(code)
    }
}

/// One upgraded connection, on NIO's frame codec: its messages go to a `BridgedSession`, whose
/// messages come back as text frames; `WebSocketProtocolState` decides the rest. When the gateway
/// stops (a quiesce) the session ends with 1001, so its client reconnects to a serving instance.
///
/// On an entry point with the fast relay, the inner session's GET stream is relayed by a
/// `FastRelay` behind this handler, as a client's own GET would be: this handler is that relay's
/// client, sending it the GET's head and turning the response's events into text frames. Nothing
/// waits in a task for the stream. A GET the relay hands on (its stages need a task) reaches the
/// `StreamHandOver` behind it, and the session reads the stream in a task instead. When the
/// stream ends (the upstream ended it, or the gateway is stopping), whichever way it was read, the
/// session ends with 1001 and its client opens another: a session without its stream would miss
/// what the server sends outside requests.
final class WebSocketSession: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = WebSocketFrame

    /// What the session is made with once the connection is upgraded.
    struct Opening: Sendable {
        let head: HTTPRequest
        let context: GatewayRequestContext
        let route: CompiledRoute
        let send: BridgedSession.Send
        let sessions: WebSocketClients.SessionCount
        /// The entry point's fast relay, to carry the inner GET stream.
        let streamRelay: (@Sendable () -> FastRelay)?
    }

    /// Until the session is made: what it is made of (the upgrade's request context is large, and
    /// the session keeps a copy of its own).
    private var opening: Opening?
    private let sessions: WebSocketClients.SessionCount
    private let logger: Logger
    private var state: WebSocketProtocolState
    private var session: BridgedSession?
    private var context: ChannelHandlerContext?
    private var pingTimer: Scheduled<Void>?
    private var released = false
    /// The relayed GET's answer, as the relay writes it.
    private enum RelayedStream {
        case none
        /// A 200 event stream: its events, parsed as they come.
        case events(SSEDecoder, pending: ByteBuffer)
        /// Any other answer: the session goes on without a stream, as before it.
        case refused
    }
    private var relayed = RelayedStream.none

    init(_ opening: Opening) {
        self.opening = opening
        self.sessions = opening.sessions
        self.logger = opening.context.logger
        self.state = WebSocketProtocolState(maxMessageBytes: opening.route.maxRequestBodyBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        guard let opening else { return }
        self.opening = nil
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        var relayStream: (@Sendable (HTTPRequest, @escaping @Sendable () -> Void) -> Void)?
        if let makeRelay = opening.streamRelay {
            do {
                // Behind this handler: what it sends inbound reaches the relay, what the relay
                // writes reaches it.
                try context.pipeline.syncOperations.addHandlers([makeRelay(), StreamHandOver()], position: .after(self))
                relayStream = { head, otherwise in loop.execute { handler.value.relay(head, otherwise: otherwise) } }
            } catch {
                logger.debug("WebSocket session streams in a task", metadata: ["error": "\(error)"])
            }
        }
        // Each message is written by the task that has it (an answer's, the session stream's): the
        // write is queued onto the connection's loop, in order, and awaited for backpressure.
        // Once the socket is gone a write fails, and there is nobody left to tell.
        let session = BridgedSession(
            id: MCPSessionID.mint(), router: opening.route.router.name, owner: opening.context.caller?.claims.sub, mcpPath: opening.route.router.mcpPath,
            streamHead: opening.head, streamContext: opening.context.forInnerRequest(),
            outbound: .init(
                deliver: { message in try? await loop.flatSubmit { handler.value.sendText(message, loop: loop) }.get() },
                finish: {},
                relayStream: relayStream,
                streamEnded: { loop.execute { handler.value.streamEnded() } }
            ),
            send: opening.send, transport: "WebSocket"
        )
        self.session = session
        logger.debug("WebSocket session opened", metadata: ["router": "\(opening.route.router.name)", "session": "\(MCPSessionID.logged(session.id))"])
        scheduleKeepAlive(context)
    }

    /// A message of the session's to the client.
    private func sendText(_ message: ByteBuffer, loop: any EventLoop) -> EventLoopFuture<Void> {
        guard let context, !state.closing else { return loop.makeSucceededVoidFuture() }
        return context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: message)))
    }

    /// The inner GET, to the relay behind this handler.
    private func relay(_ head: HTTPRequest, otherwise: @escaping @Sendable () -> Void) {
        guard let context, !state.closing else { return }
        guard let handOver = try? context.pipeline.syncOperations.handler(type: StreamHandOver.self) else { return otherwise() }
        handOver.otherwise = otherwise
        context.fireChannelRead(wrapInboundOut(.head(head)))
        context.fireChannelRead(wrapInboundOut(.end(nil)))
        context.fireChannelReadComplete()
    }

    // MARK: the relayed stream's answer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            relayed = response.status == .ok && MediaTypes.isEventStream(response.headerFields[.contentType]) ? .events(SSEDecoder(), pending: ByteBuffer()) : .refused
        case .body(var part):
            guard case .events(var decoder, var pending) = relayed else { break }
            relayed = .none
            pending.writeBuffer(&part)
            do {
                while !state.closing, let event = try decoder.decode(buffer: &pending) {
                    if event.data.readableBytes > 0 { context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: event.data)), promise: nil) }
                }
                pending.discardReadBytes()
                relayed = .events(decoder, pending: pending)
            } catch {
                logger.debug("the WebSocket session's stream sent an unreadable event", metadata: ["error": "\(error)"])
                relayed = .refused
            }
        case .end:
            relayed = .none
        }
        promise?.succeed(())
    }

    /// The session's stream ended, read by a task: the session ends as when the relay ends it.
    private func streamEnded() {
        guard let context else { return }
        perform(state.close(.goingAway), context: context)
    }

    /// The relay closes its client's connection when the stream ends: the session ends with a
    /// close frame (1001).
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard context.channel.isActive, case .close = state.close(.goingAway) else { return context.close(mode: mode, promise: promise) }
        closeWithFrame(.goingAway, mode: mode, promise: promise, context: context)
    }

    /// A close frame, then the connection closed from here (past the relay behind this handler).
    /// The peer's answering close is not waited for: nothing more would be read from it.
    private func closeWithFrame(_ code: WebSocketErrorCode, mode: CloseMode = .all, promise: EventLoopPromise<Void>? = nil, context: ChannelHandlerContext) {
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))).assumeIsolated().whenComplete { _ in
            context.close(mode: mode, promise: promise)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        end()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    /// The connection is gone: the session and its place go with it (once).
    private func end() {
        pingTimer?.cancel()
        pingTimer = nil
        session?.close()
        session = nil
        guard !released else { return }
        released = true
        sessions.release()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(state.read(unwrapInboundIn(data)), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The gateway is stopping.
        if event is ChannelShouldQuiesceEvent { return perform(state.close(.goingAway), context: context) }
        // The client half-closed without a close frame: nothing more will come from it.
        if case ChannelEvent.inputClosed = event { return context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // NIO's protocol error handler (before this one) has answered its own errors with a close.
        logger.debug("WebSocket session ended by an error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func perform(_ action: WebSocketProtocolState.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            return
        case .deliver(let body):
            guard let session else { return }
            do {
                // A batch is split into its messages.
                for single in try LegacySSEClients.split(body) {
                    if let refusal = Self.busyRefusal(single, session: session) {
                        write(.text, refusal, context: context)
                        continue
                    }
                    session.dispatch(single, head: session.streamHead)
                }
            } catch {
                let refusal = JSONRPCErrorResponse.make(rawID: nil, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: \(error.message)")
                write(.text, refusal, context: context)
            }
        case .pong(let payload):
            write(.pong, payload, context: context)
        case .ping:
            write(.ping, context.channel.allocator.buffer(capacity: 0), context: context)
        case .close(let code):
            closeWithFrame(code, context: context)
        case .closeConnection:
            context.close(promise: nil)
        }
    }

    /// The error for a request beyond `maxRequestsInFlight`; nil for anything that may go on.
    private static func busyRefusal(_ message: ByteBuffer, session: BridgedSession) -> ByteBuffer? {
        guard session.tasksInFlight >= WebSocketClients.maxRequestsInFlight, let parsed = try? JSONRPCMessage(parsing: message), parsed.isRequest else { return nil }
        return JSONRPCErrorResponse.make(
            rawID: parsed.rawID, code: WebSocketClients.busyCode,
            message: "Too many requests in flight: this session has \(WebSocketClients.maxRequestsInFlight) unanswered; send more once one is answered"
        )
    }

    private func write(_ opcode: WebSocketOpcode, _ data: ByteBuffer, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: opcode, data: data)), promise: nil)
    }

    private func scheduleKeepAlive(_ context: ChannelHandlerContext) {
        pingTimer = context.eventLoop.assumeIsolated().scheduleTask(in: WebSocketClients.pingInterval) { [self] in
            pingTimer = nil
            guard context.channel.isActive else { return }
            let action = state.keepAliveTick()
            perform(action, context: context)
            if action == .ping { scheduleKeepAlive(context) }
        }
    }
}

/// Behind a WebSocket session's relay: the inner GET the relay hands on (to the full pipeline, as
/// it would a client's) comes here, and the session reads its stream in a task instead.
final class StreamHandOver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart

    /// What the session does instead, for the GET it sent last.
    var otherwise: (@Sendable () -> Void)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head = unwrapInboundIn(data) else { return }
        otherwise?()
        otherwise = nil
    }
}

extension GatewayPipeline {
    /// Whether a WebSocket upgrade request may become an MCP session: the stages up to
    /// authentication run on it as on any request; anything they refuse, and anything that is
    /// not an MCP endpoint, is not upgraded (the log says what HTTP would have answered).
    func webSocketUpgrade(_ head: HTTPRequest, channel: any Channel, logger: Logger, streamRelay: (@Sendable () -> FastRelay)? = nil) async -> WebSocketAcceptance? {
        let (credentialed, offersMCP, offersAny) = WebSocketClients.credentialed(head)
        // A client naming subprotocols must name `mcp` among them.
        guard offersMCP || !offersAny else { return nil }
        let request = Request(head: credentialed, body: RequestBody(buffer: ByteBuffer()))
        var context = GatewayRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger))
        clientAddressing.apply(request, &context)
        do {
            if try await frontDoor.answer(request, context: context) != nil { return nil }
            try routeMatching.apply(request, &context)
            guard let route = context.route, context.legacyEndpoint == nil else { throw GatewayError.notMCPEndpoint(router: context.route?.router.name ?? "", mcpPath: context.route?.router.mcpPath ?? "") }
            try requestChecks.apply(request, context)
            try await authentication.apply(request, &context)
            guard webSockets.sessions.admit() else { throw GatewayError.atCapacity(what: "WebSocket sessions", limit: webSockets.sessions.limit) }
            context.logger.info("WebSocket upgrade", metadata: [
                "router": "\(route.router.name)", "user": "\(context.caller?.claims.login ?? "")", "ip": "\(context.clientIP ?? "")",
            ])
            var fields = HTTPFields()
            if offersMCP { fields[.secWebSocketProtocol] = WebSocketClients.subprotocol }
            let opening = WebSocketSession.Opening(
                head: credentialed, context: context, route: route, send: bridgedSend, sessions: webSockets.sessions, streamRelay: streamRelay
            )
            let sessions = webSockets.sessions
            return WebSocketAcceptance(
                responseFields: fields,
                install: { channel in
                    do {
                        try channel.pipeline.syncOperations.addHandler(WebSocketSession(opening))
                    } catch {
                        sessions.release()
                        throw error
                    }
                },
                abandon: { sessions.release() }
            )
        } catch let error as GatewayError {
            context.logger.info("WebSocket upgrade refused", metadata: [
                "path": "\(head.path ?? "")", "status": "\(error.status.code)", "reason": "\(error.reason)", "ip": "\(context.clientIP ?? "")",
            ])
            return nil
        } catch {
            context.logger.info("WebSocket upgrade refused", metadata: ["path": "\(head.path ?? "")", "error": "\(error)"])
            return nil
        }
    }
}
