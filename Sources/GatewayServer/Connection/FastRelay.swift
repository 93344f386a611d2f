import GatewayUpstream
import GatewayStdio
import GatewayConfig
import GatewayAuth
import GatewayStore
import GatewayCluster
import GatewayMetrics
import GatewayMiddlewares
import AuthorizationServer
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import MCPMessages
import MCPTranslation
import MCPTransport
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The data plane's fast path: a request to a plain HTTP upstream that the pipeline's stages can
/// admit without waiting (see `FastPath.swift`) is relayed by this connection handler on the
/// client connection's own event loop, through a kept-alive upstream connection of the same loop:
/// no task, no thread hop, no copy of the body beyond the socket reads. Every other request goes
/// on to Hummingbird and the full pipeline, unchanged.
///
/// Requests on one connection are answered in order: while the full pipeline holds a request,
/// later ones go there too; while a request is relayed here, later ones (pipelined) wait.
///
/// It sits behind Hummingbird's connection state handler (see `FastRelayInstaller`), which so
/// sees the relayed requests like any other: idle timeouts and a graceful stop wait for them.
final class FastRelay: ChannelDuplexHandler, RemovableChannelHandler, UpstreamExchange {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The entry point's pipeline, pools and logger, one reference per connection.
    private let shared: Shared
    private var pipeline: GatewayPipeline { shared.pipeline }
    private var pools: UpstreamRelayPools { shared.pools }
    private var logger: Logger { shared.logger }

    /// What every connection of one entry point relays with.
    final class Shared: Sendable {
        let pipeline: GatewayPipeline
        let pools: UpstreamRelayPools
        let logger: Logger

        init(pipeline: GatewayPipeline, pools: UpstreamRelayPools, logger: Logger) {
            self.pipeline = pipeline
            self.pools = pools
            self.logger = logger
        }
    }

    private var context: ChannelHandlerContext?
    /// What the parts of the request being read are for.
    private enum Inbound {
        case between
        /// Handed to the full pipeline.
        case handedOver
        /// Admitted by the fast path so far: head and body kept until the end decides.
        case reading(FastAdmission, body: ByteBuffer?)
    }
    private var inbound = Inbound.between
    /// Requests handed to the full pipeline whose response has not ended.
    private var handedOver = 0
    /// The request being relayed.
    private var relay: Relay?
    /// Parts of requests that arrived (pipelined) while one is relayed. Room for one to start:
    /// clients rarely pipeline, and every connection kept the default's 16 slots.
    private var waiting = CircularBuffer<HTTPRequestPart>(initialCapacity: 1)
    /// A read was held back while requests waited.
    private var readPending = false
    /// The token check's answer for the connection's last token.
    private var tokens = TokenMemo()
    /// Where the connection's last request was routed (when the rules allow remembering it).
    private var routes = RouteMemo()
    /// The metric series this connection recorded last (`metrics:`).
    private var observations = ObservationMemo()
    /// The connection's peer, made once (its address as text is an `inet_ntop` call).
    private var knownPeer: GatewayRequestContext.Peer?
    /// Whether Hummingbird serves the connection behind this relay yet.
    enum HTTPHandling {
        /// Its task reads what the relay hands on.
        case running
        /// Not yet: this starts it (its async channel at the pipeline's end, and a task reading
        /// it), when the relay first hands it a request (`HTTP1UpgradeChannel.defersHTTP`).
        case deferred(() throws -> Void)
    }
    var http = HTTPHandling.running
    /// The client half-closed the connection (`ChannelEvent.inputClosed`).
    private var inputClosed = false
    /// Hummingbird has been told of the half-close.
    private var inputClosedForwarded = false

    /// Hummingbird's handling, before a request is handed to it.
    private func startHTTP(_ context: ChannelHandlerContext) {
        guard case .deferred(let start) = http else { return }
        http = .running
        do {
            try start()
        } catch {
            logger.debug("the connection's HTTP handling could not start", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// One timer per connection for the upstream's response-head deadline, re-armed from its own
    /// firing while a head is due: relayed requests do not schedule and cancel a task each.
    private var headTimer: Scheduled<Void>?
    /// When `headTimer` fires.
    private var headTimerDue = NIODeadline.uptimeNanoseconds(0)

    private func armHeadTimer(_ context: ChannelHandlerContext) {
        guard let due = relay?.headDue else { return }
        // A timer that fires by then will do (it re-arms for the rest); a later one (a previous
        // request's longer timeout) is replaced.
        if headTimer != nil, headTimerDue <= due { return }
        headTimer?.cancel()
        headTimerDue = due
        headTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [self] in
            headTimer = nil
            // Nothing due any more: the timer lapses until the next relay arms it.
            guard let relay, let due = relay.headDue else { return }
            guard NIODeadline.now() >= due else { return armHeadTimer(context) }
            relay.headDue = nil
            relay.connection?.abandon()
            failed(UpstreamError(.timeout, service: relay.admission.serviceName, detail: "no response within \(relay.headerTimeout)"))
        }
    }

    private func peer(of channel: any Channel) -> GatewayRequestContext.Peer {
        if let knownPeer { return knownPeer }
        let peer = GatewayRequestContext.Peer(of: channel)
        // A connection without an address yet (none seen in practice) asks again next time.
        if peer.address != nil { knownPeer = peer }
        return peer
    }

    /// A class: every callback of the exchange updates it in place.
    private final class Relay {
        let admission: FastAdmission
        var connection: UpstreamConnection?
        /// When the upstream's response head is due (`responseHeaderTimeout`), until it arrives.
        var headDue: NIODeadline?
        var headerTimeout = Duration.zero
        var responded = false
        var eventStream = false
        var status = 0
        var paused = false
        /// The upstream handed out a session id: the answer waits until it is bound to the caller.
        var binding = false
        var held: [ByteBuffer] = []
        var upstreamEnded = false
        /// A session-less initialize answered 400: the answer's head, held with its body (in
        /// `held`) until the body says whether it is a 2026-07-28-only server's refusal.
        var refusalCheck: UpstreamResponseHead?
        var refusalBytes = 0
        let started = Stopwatch()
        /// `audit` / `metrics`: what was sent, for the observations at the end.
        var tally: ResponseTally?
        var contentType = ""
        var createdSession: String?
        var observed = false
        /// The upstream's time to the answer's head, when the head is counted at the end
        /// (`noteHead`).
        var uncountedHead: Double?
        /// A stdio session's stream this relay reads (its id), once the request went to the child.
        var stdioStream: Int?
        /// A session's GET stream: its events, so that the gateway's own notifications go
        /// between two of them (`ListChangeNotifier`), and what it is registered with.
        var standalone: StandaloneStream?

        init(admission: FastAdmission) {
            self.admission = admission
        }

        /// "GET" or "POST", as the audit line and the access log name it (no allocation).
        var method: String { admission.request.method == .get ? "GET" : "POST" }
    }

    /// A session's GET stream relayed here: ended when the gateway starts stopping (it answers
    /// no request, and its client reconnects with `Last-Event-ID`), and told of policy changes.
    private struct StandaloneStream {
        var events = SSEEventSplitter()
        var drainToken: Int?
        var listener: Int?
    }

    init(shared: Shared) {
        self.shared = shared
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandonRelay()
        headTimer?.cancel()
        headTimer = nil
        self.context = nil
    }

    // MARK: requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if relay != nil {
            waiting.append(part)
            return
        }
        read(part, context: context)
    }

    private func read(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (part, inbound) {
        case (.head(let head), _):
            if handedOver == 0, let admission = pipeline.fastAdmission(head, channel: context.channel, peer: peer(of: context.channel), logger: logger, tokens: &tokens, routes: &routes) {
                inbound = .reading(admission, body: nil)
            } else {
                handOver(.head(head), context: context)
                inbound = .handedOver
            }
        case (.body(let part), .reading(let admission, let kept)):
            inbound = .between
            var body = part
            if var kept {
                kept.writeImmutableBuffer(part)
                body = kept
            }
            if body.readableBytes > admission.route.maxRequestBodyBytes {
                // Too large: the full pipeline answers 413 (it reads the rest of the body).
                handOver(.head(admission.request.head), context: context)
                context.fireChannelRead(wrapInboundOut(.body(body)))
                inbound = .handedOver
            } else {
                inbound = .reading(admission, body: body)
            }
        case (.end(let trailers), .reading(let admission, let body)):
            inbound = .between
            let bytes = body ?? ByteBuffer()
            guard let call = pipeline.fastCall(admission, body: bytes) else {
                handOver(.head(admission.request.head), context: context)
                if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(bytes))) }
                context.fireChannelRead(wrapInboundOut(.end(trailers)))
                return
            }
            start(call, body: bytes, context: context)
        case (.end, _):
            inbound = .between
            startHTTP(context)
            context.fireChannelRead(wrapInboundOut(part))
        case (.body, _):
            startHTTP(context)
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    /// A half-close ends the connection once what it sent is answered: Hummingbird's task does
    /// that when it runs; otherwise the relay does (here, or when its relay ends: `readWaiting`).
    /// (A stop and an idle timeout are the state handler's, before this one.)
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputClosed = true
            guard case .deferred = http else {
                inputClosedForwarded = true
                return context.fireUserInboundEventTriggered(event)
            }
            if relay == nil, waiting.isEmpty { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// A failed read: Hummingbird's task ends the connection when it runs; otherwise the relay does.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard case .deferred = http else { return context.fireErrorCaught(error) }
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func handOver(_ head: HTTPRequestPart, context: ChannelHandlerContext) {
        startHTTP(context)
        handedOver += 1
        context.fireChannelRead(wrapInboundOut(head))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    /// Reading pauses while pipelined requests wait behind a relayed one: a client cannot make
    /// the gateway buffer without bound.
    func read(context: ChannelHandlerContext) {
        if relay != nil, !waiting.isEmpty {
            readPending = true
            return
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), handedOver > 0 { handedOver -= 1 }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away: the upstream request is cancelled with it.
        abandonRelay()
        waiting.removeAll()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let relay, relay.paused {
            relay.paused = false
            relay.connection?.setReading(true)
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: the relay

    private func start(_ admission: FastAdmission, body: ByteBuffer, context: ChannelHandlerContext) {
        let relay = Relay(admission: admission)
        if pipeline.observer != nil { relay.tally = ResponseTally() }
        self.relay = relay
        guard !admission.route.middlewares.isEmpty else { return send(relay, body: body, context: context) }
        // Stage 7: the router's middlewares (a rate limit's one store round trip), then the relay.
        // Without a task when the middlewares can (a rate limit on Redis answers at once from what
        // the instance reserved, or asks on this loop's own connection). The context and the
        // middlewares are read where they are: a copy of either is a dozen retains or more.
        let admitted: EventLoopPromise<GatewayError?>
        switch pipeline.routerMiddlewares.refusalNow(admission) {
        case .proceed?: return send(relay, body: body, context: context)
        case .refused(let refusal)?: return answer(relay, with: refusal)
        case .pending(let wait)?:
            admitted = context.eventLoop.makePromise(of: GatewayError?.self)
            wait { admitted.succeed($0) }
        case nil:
            admitted = context.eventLoop.makePromise(of: GatewayError?.self)
            let (middlewares, requestContext) = (pipeline.routerMiddlewares, admission.context)
            admitted.completeWithTask {
                do throws(GatewayError) { return try await middlewares.refusal(requestContext) } catch { return error }
            }
        }
        admitted.futureResult.assumeIsolated().whenComplete { [self] result in
            guard self.relay === relay else { return }  // the client left meanwhile
            switch result {
            case .success(let refusal): proceed(relay, refusal: refusal, body: body, context: context)
            case .failure: answer(relay, with: .storeUnavailable)
            }
        }
    }

    /// After the middlewares: the relay, or their refusal.
    private func proceed(_ relay: Relay, refusal: GatewayError?, body: ByteBuffer, context: ChannelHandlerContext) {
        if let refusal { return answer(relay, with: refusal) }
        send(relay, body: body, context: context)
    }

    private func send(_ relay: Relay, body: ByteBuffer, context: ChannelHandlerContext) {
        let admission = relay.admission
        let (upstream, relayTarget): (HTTPUpstream, RelayTarget)
        switch admission.destination {
        case .stdio(let manager, let session): return sendToChild(relay, manager: manager, session: session, context: context)
        case .http(let http, let target): (upstream, relayTarget) = (http, target)
        }
        if let sessionID = admission.sessionToCheck {
            admission.sessionToCheck = nil
            return checkSession(sessionID, relay: relay, body: body, context: context)
        }
        let service = upstream.service
        // Written before a connection is taken: a request that cannot be sent takes none.
        var request = context.channel.allocator.buffer(capacity: 512 + body.readableBytes)
        do {
            try pipeline.fastUpstreamRequest(admission, upstream: upstream, target: relayTarget, body: admission.request.method == .get ? nil : body, into: &request)
        } catch {
            return failed(UpstreamError(.protocolFailure, service: service.name, detail: "the request cannot be sent: \(error)"))
        }
        let connectTimeout = TimeAmount.nanoseconds(Int64(service.connectTimeout.timeInterval * 1e9))
        let pool = pools.pool(on: context.eventLoop)
        pool.connection(to: relayTarget, service: service.name, connectTimeout: connectTimeout) { [self] result in
            guard self.relay === relay, relay.connection == nil else {
                // The client left while connecting.
                if case .success(let connection) = result { connection.abandon() }
                return
            }
            switch result {
            case .failure(let error):
                failed(error)
            case .success(let connection):
                relay.connection = connection
                relay.headerTimeout = service.responseHeaderTimeout
                relay.headDue = .now() + TimeAmount.nanoseconds(Int64(service.responseHeaderTimeout.timeInterval * 1e9))
                armHeadTimer(context)
                connection.send(request: request, to: self)
            }
        }
    }

    /// The session's binding as the store has it (`SessionBindings.check`, as `HTTPProxy.forward`
    /// checks it): the request goes on in a session of the upstream's own, is refused (404, or
    /// 503 when the store cannot say), or, in a session another instance bridged, is handed to the
    /// full pipeline, which translates its requests.
    private func checkSession(_ sessionID: String, relay: Relay, body: ByteBuffer, context: ChannelHandlerContext) {
        let bindings = pipeline.dispatch.proxy.bindings
        let owner = SessionOwner(route: relay.admission.route, caller: relay.admission.context.caller)
        let checked = context.eventLoop.makePromise(of: Bool.self)
        checked.completeWithTask {
            do throws(SessionRefusal) { return try await bindings.check(sessionID, owner: owner).kind != "bridged" } catch { throw GatewayError(error) }
        }
        checked.futureResult.assumeIsolated().whenComplete { [self] result in
            guard self.relay === relay else { return }  // the client left meanwhile
            switch result {
            case .success(true): send(relay, body: body, context: context)
            case .success(false): handOverRelay(relay, body: body, context: context)
            case .failure(let error): answer(relay, with: (error as? GatewayError) ?? .storeUnavailable)
            }
        }
    }

    /// A request admitted here that only the full pipeline can answer after all: handed to it
    /// whole, before any request that arrived after it.
    private func handOverRelay(_ relay: Relay, body: ByteBuffer, context: ChannelHandlerContext) {
        self.relay = nil
        handOver(.head(relay.admission.request.head), context: context)
        if body.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(body))) }
        context.fireChannelRead(wrapInboundOut(.end(nil)))
        // Outside a read: Hummingbird's inbound stream takes what was read on a read's completion.
        context.fireChannelReadComplete()
        readWaiting(context: context)
    }

    // MARK: a stdio session's child

    /// The request goes to the session's child; its messages come back on the child's event
    /// loop and are handed to this connection's, in order: the answer alone is JSON, messages
    /// before it (progress, the child's own requests) make the answer an SSE stream, as
    /// `StdioBridge` answers.
    private func sendToChild(_ relay: Relay, manager: StdioSessionManager, session: LegacySession, context: ChannelHandlerContext) {
        guard let message = relay.admission.context.call?.message else { return answer(relay, with: .pipelineOrder(stage: "FastRelay (stdio)")) }
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let relayOnLoop = NIOLoopBound(relay, eventLoop: loop)
        do {
            relay.stdioStream = try session.sendRequest(message, timeout: manager.service.requestTimeout) { item in
                loop.execute { handler.value.childSent(item, relay: relayOnLoop.value, session: session) }
            }
        } catch {
            answer(relay, with: .sessionNotFound)
        }
    }

    private func childSent(_ item: StreamItem?, relay: Relay, session: LegacySession) {
        guard self.relay === relay, let context, let streamID = relay.stdioStream else { return }
        switch item {
        case .message(let eventID, let bytes, let final):
            if !relay.responded, final {
                var fields: HTTPFields = [.contentType: "application/json", .contentLength: String(bytes.readableBytes), .date: HTTPDate.now()]
                if pipeline.hops.membership.isDraining { fields[.connection] = "close" }
                childResponded(relay, fields: fields, contentType: "application/json", context: context)
                relay.tally?.add(bytes)
                context.write(wrapOutboundOut(.body(bytes)), promise: nil)
                finishChildRelay(relay, session: session, streamID: streamID, answered: true, context: context)
                return
            }
            if !relay.responded {
                relay.eventStream = true
                var fields = MCPResponses.eventStreamHeaders
                // Relayed here, the stream does not end the connection (the full pipeline's does).
                fields[.connection] = pipeline.hops.membership.isDraining ? "close" : nil
                fields[.date] = HTTPDate.now()
                childResponded(relay, fields: fields, contentType: "text/event-stream", context: context)
            }
            let event = SSEEncoding.event(id: eventID, data: bytes, allocator: context.channel.allocator)
            relay.tally?.add(event)
            context.write(wrapOutboundOut(.body(event)), promise: nil)
            if final {
                finishChildRelay(relay, session: session, streamID: streamID, answered: true, context: context)
            } else {
                context.flush()
            }
        case .end, nil:
            guard relay.responded else {
                // The session ended before the answer (its child exited): as `StdioBridge` says.
                let error = JSONRPCErrorResponse.make(rawID: nil, code: JSONRPCErrorResponse.internalError, message: "the session ended")
                let fields: HTTPFields = [.contentType: "application/json", .contentLength: String(error.readableBytes), .date: HTTPDate.now()]
                childResponded(relay, fields: fields, contentType: "application/json", context: context)
                relay.tally?.add(error)
                context.write(wrapOutboundOut(.body(error)), promise: nil)
                return finishChildRelay(relay, session: session, streamID: streamID, context: context)
            }
            finishChildRelay(relay, session: session, streamID: streamID, context: context)
        }
    }

    /// The answer's head (200: errors of the child are JSON-RPC errors in the body), with the
    /// access-log line and, when on, the metrics the full pipeline records at this point.
    private func childResponded(_ relay: Relay, fields: HTTPFields, contentType: String, context: ChannelHandlerContext) {
        noteHead(relay, status: 200, contentType: contentType, createdSession: nil)
        logAccess(relay, status: 200)
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .ok, headerFields: fields))), promise: nil)
    }

    /// The answer's head is decided (the upstream's, or the one made for a child's answer): what
    /// the audit line needs of it later, and the metrics the full pipeline records at this point.
    private func noteHead(_ relay: Relay, status: Int, contentType: String?, createdSession: String?) {
        relay.responded = true
        relay.status = status
        guard let observer = pipeline.observer else { return }
        relay.contentType = contentType ?? ""
        relay.createdSession = createdSession
        guard let metrics = observer.metrics else { return }
        let upstreamSeconds = relay.started.elapsedSeconds
        // A JSON answer ends soon: its head is counted with the rest of its observations, under
        // one lock. A stream can last long: counted now, as the full pipeline does.
        guard relay.eventStream else { return relay.uncountedHead = upstreamSeconds }
        metrics.upstream(service: relay.admission.serviceName, seconds: upstreamSeconds, handles: &observations.metrics)
        metrics.request(router: relay.admission.route.router.name, status: status, handles: &observations.metrics)
    }

    /// `answered`: the child's answer came (the stream's only request is answered: the session
    /// dropped the stream as it handed the answer over); otherwise the session ended first.
    private func finishChildRelay(_ relay: Relay, session: LegacySession, streamID: Int, answered: Bool = false, context: ChannelHandlerContext) {
        self.relay = nil
        if !answered { session.stopReading(streamID: streamID) }
        observe(relay, status: relay.status)
        let closing = pipeline.hops.membership.isDraining
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [context] _ in
            if closing { context.close(promise: nil) }
        }
        if !closing { readWaiting(context: context) }
    }

    func upstreamResponded(_ head: UpstreamResponseHead) {
        guard let relay, let context else { return }
        relay.headDue = nil
        if head.status == 400, relay.admission.startsSession, relay.refusalCheck == nil {
            relay.refusalCheck = head
            return
        }
        // The end-to-end fields only (`UpstreamResponseHead.fields`).
        var fields = head.fields
        // Stopping: this connection is not kept for another request (as the full pipeline says).
        if pipeline.hops.membership.isDraining { fields[.connection] = "close" }
        // `value(of:)`: the subscript joins through a lazy map per read (~2k instructions each).
        let contentType = fields.value(of: .contentType)
        if MediaTypes.isEventStream(contentType) {
            relay.eventStream = true
            fields[SSEHeaders.accelBuffering] = "no"
            fields[.connection] = "close"
            if !fields.contains(.cacheControl) { fields[.cacheControl] = "no-cache" }
        }
        let response = HTTPResponse(status: .init(code: head.status, reasonPhrase: head.reasonPhrase), headerFields: fields)
        // A session-based upstream names the request's own session on every answer: only a new
        // one is bound.
        var created = fields.value(of: MCPHeaders.sessionID)
        if created != nil, created == relay.admission.context.call?.sessionID { created = nil }
        noteHead(relay, status: head.status, contentType: contentType, createdSession: created)
        if relay.eventStream, head.status == 200, relay.admission.request.method == .get {
            standaloneStreamBegins(relay, context: context)
        }
        guard let created else {
            logAccess(relay, status: relay.status)
            context.write(wrapOutboundOut(.head(response)), promise: nil)
            return
        }
        // A session id the upstream hands out is bound to this router and caller before the
        // client sees it, as the proxy does (presented by anyone else, it is not found).
        relay.binding = true
        let bindings = pipeline.dispatch.proxy.bindings
        let owner = SessionOwner(route: relay.admission.route, caller: relay.admission.context.caller)
        let details = SessionDetails(service: relay.admission.serviceName, kind: "http")
        let bound = context.eventLoop.makePromise(of: Void.self)
        bound.completeWithTask {
            do throws(SessionRefusal) { try await bindings.bind(created, to: owner, details: details) } catch { throw GatewayError(error) }
        }
        bound.futureResult.assumeIsolated().whenComplete { [self] result in
            sessionBound(result, response: response)
        }
    }

    private func sessionBound(_ result: Result<Void, any Error>, response: HTTPResponse) {
        guard let relay, let context else { return }
        if case .failure(let error) = result {
            relay.connection?.abandon()
            relay.responded = false
            answer(relay, with: (error as? GatewayError) ?? .storeUnavailable)
            return
        }
        relay.binding = false
        let (held, ended) = (relay.held, relay.upstreamEnded)
        relay.held = []
        logAccess(relay, status: relay.status)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        for part in held { context.write(wrapOutboundOut(.body(part)), promise: nil) }
        context.flush()
        if ended { upstreamEnded() }
    }

    /// The held answer to an initialize is not a 2026-07-28-only server's refusal: it goes on as
    /// any answer does.
    private func releaseRefusalCheck(_ relay: Relay) {
        guard let head = relay.refusalCheck else { return }
        let parts = relay.held
        relay.refusalCheck = nil
        relay.held = []
        // Checked: the head goes on this time.
        relay.admission.startsSession = false
        upstreamResponded(head)
        for part in parts { upstreamBody(part) }
        upstreamReadComplete()
    }

    // MARK: a session's GET stream

    /// Registers a session's GET stream where the full pipeline's is registered: with the
    /// shutdown drain (`HTTPProxy`: standalone streams end when the gateway starts stopping) and
    /// with the notifier of policy changes (`GatewayPipeline.sessionStream`).
    private func standaloneStreamBegins(_ relay: Relay, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let bound = NIOLoopBound(relay, eventLoop: loop)
        var stream = StandaloneStream()
        stream.listener = pipeline.listChanges.listen(router: relay.admission.route.router.name, identity: relay.admission.context.caller?.identity) { event in
            loop.execute { handler.value.notify(event, relay: bound.value) }
        }
        relay.standalone = stream
        // Last: a drain that has already begun calls back at once (on this loop, later).
        relay.standalone?.drainToken = pipeline.dispatch.proxy.drain.onDrain {
            loop.execute { handler.value.drained(relay: bound.value) }
        }
    }

    /// Unregisters the stream; what is left of an event cut short, to be sent as it is.
    private func standaloneStreamEnds(_ relay: Relay) -> ByteBuffer? {
        guard var stream = relay.standalone else { return nil }
        relay.standalone = nil
        if let listener = stream.listener { pipeline.listChanges.stopListening(listener) }
        pipeline.dispatch.proxy.drain.cancel(stream.drainToken)
        return stream.events.rest()
    }

    /// One of the gateway's own notifications, between two of the upstream's events.
    private func notify(_ event: ByteBuffer, relay: Relay) {
        guard self.relay === relay, relay.standalone != nil, let context else { return }
        relay.tally?.add(event)
        if relay.binding {
            relay.held.append(event)
            return
        }
        context.writeAndFlush(wrapOutboundOut(.body(event)), promise: nil)
    }

    /// The gateway is stopping: the stream ends (its client reconnects to a serving instance).
    private func drained(relay: Relay) {
        guard self.relay === relay, let context else { return }
        guard !relay.binding else {
            // Its head is not sent yet: the connection just closes.
            abandonRelay()
            return context.close(promise: nil)
        }
        relay.connection?.abandon()
        relay.connection = nil
        if let rest = standaloneStreamEnds(relay) { context.write(wrapOutboundOut(.body(rest)), promise: nil) }
        self.relay = nil
        observe(relay, status: relay.status)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [context] _ in
            context.close(promise: nil)
        }
    }

    func upstreamBody(_ part: ByteBuffer) {
        guard let context, let relay else { return }
        if relay.refusalCheck != nil {
            relay.held.append(part)
            relay.refusalBytes += part.readableBytes
            // No refusal is this long: the answer goes on as it is.
            if relay.refusalBytes > 64 * 1024 { releaseRefusalCheck(relay) }
            return
        }
        relay.tally?.add(part)
        if relay.binding {
            relay.held.append(part)
            return
        }
        if relay.standalone != nil {
            // Whole events only, so that a notification of the gateway's fits between two.
            guard let events = relay.standalone?.events.wholeEvents(appending: part) else { return }
            context.write(wrapOutboundOut(.body(events)), promise: nil)
        } else {
            context.write(wrapOutboundOut(.body(part)), promise: nil)
        }
        if !context.channel.isWritable, !relay.paused {
            // The client reads slower than the upstream writes: stop reading the upstream.
            relay.paused = true
            relay.connection?.setReading(false)
        }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamEnded() {
        guard let relay, let context else { return }
        if relay.refusalCheck != nil {
            var answer = ByteBuffer()
            for part in relay.held { answer.writeImmutableBuffer(part) }
            let code = (try? JSONRPCMessage(parsing: answer))?.value(at: ["error", "code"])
            guard code != String(ModernProtocol.unsupportedVersion) else {
                // A 2026-07-28-only upstream: the full pipeline answers from its discover and
                // bridges the session (it sends the initialize again, which the upstream refuses
                // again, changing nothing).
                return handOverRelay(relay, body: relay.admission.context.call?.body ?? ByteBuffer(), context: context)
            }
            releaseRefusalCheck(relay)
            guard self.relay === relay else { return }
        }
        if relay.binding {
            relay.upstreamEnded = true
            return
        }
        if let rest = standaloneStreamEnds(relay) { context.write(wrapOutboundOut(.body(rest)), promise: nil) }
        self.relay = nil
        observe(relay, status: relay.status)
        let closing = relay.eventStream
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [context] _ in
            if closing { context.close(promise: nil) }
        }
        if !closing { readWaiting(context: context) }
    }

    func upstreamFailed(_ error: UpstreamError) {
        failed(error)
    }

    /// The upstream failed: before its answer began, the client gets the JSON-RPC error the full
    /// pipeline would send (502, 504); after, the connection closes (the answer is cut short).
    private func failed(_ error: UpstreamError) {
        guard let relay, let context else { return }
        let gatewayError = GatewayError.upstream(error)
        RouteMatching.log(gatewayError, router: relay.admission.route.router.name, logger: logger)
        guard !relay.responded else {
            abandonRelay()
            context.close(promise: nil)
            return
        }
        pipeline.observer?.metrics?.upstream(service: relay.admission.serviceName, seconds: relay.started.elapsedSeconds, handles: &observations.metrics)
        answer(relay, with: gatewayError)
    }

    /// The JSON-RPC error the full pipeline would answer with, instead of the upstream's answer
    /// (a middleware's refusal for the request's id, as stage 7 answers).
    private func answer(_ relay: Relay, with gatewayError: GatewayError) {
        guard let context else { return }
        relay.headDue = nil
        self.relay = nil
        var rawID: String?
        if case .rateLimited = gatewayError { rawID = relay.admission.context.call?.rawID }
        let answer = gatewayError.jsonRPCAnswer(rawID: rawID)
        var fields = answer.headers
        fields[.contentLength] = String(answer.body.readableBytes)
        logAccess(relay, status: Int(answer.status.code))
        if pipeline.observer != nil {
            pipeline.observer?.metrics?.request(router: relay.admission.route.router.name, status: Int(answer.status.code))
            relay.tally = ResponseTally()
            relay.tally?.add(answer.body)
            relay.contentType = "application/json"
            relay.createdSession = nil
            observe(relay, status: Int(answer.status.code))
        }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(answer.body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        readWaiting(context: context)
    }

    /// Requests that arrived while one was relayed, in order; then a half-close that came
    /// meanwhile.
    private func readWaiting(context: ChannelHandlerContext) {
        if !waiting.isEmpty {
            while relay == nil, let part = waiting.popFirst() {
                read(part, context: context)
            }
            context.fireChannelReadComplete()
            if waiting.isEmpty, readPending {
                readPending = false
                context.read()
            }
        }
        guard inputClosed, relay == nil, waiting.isEmpty else { return }
        switch http {
        case .deferred:
            context.close(promise: nil)
        case .running:
            // Started after the half-close (a request handed on): it ends the connection once it
            // has answered what it was handed.
            guard !inputClosedForwarded else { return }
            inputClosedForwarded = true
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    private func abandonRelay() {
        guard let relay else { return }
        _ = standaloneStreamEnds(relay)
        self.relay = nil
        relay.headDue = nil
        relay.connection?.abandon()
        // A session's messages keep buffering for a resume (`Last-Event-ID`), as when the full
        // pipeline's reader stops.
        if case .stdio(_, let session) = relay.admission.destination, let streamID = relay.stdioStream {
            session.stopReading(streamID: streamID)
        }
        // The client went away, or the upstream broke off its answer: recorded with what was sent
        // (before any answer, as the full pipeline's cancelled request: 502).
        observe(relay, status: relay.responded ? relay.status : 502)
    }

    /// The audit line and metrics of a finished relay (once), as the full pipeline's observer
    /// makes them.
    private func observe(_ relay: Relay, status: Int) {
        guard let observer = pipeline.observer, !relay.observed else { return }
        relay.observed = true
        let admission = relay.admission
        let call = admission.context.call
        let (bytesOut, errorCode) = relay.tally?.summary(contentType: relay.contentType) ?? (0, nil)
        let sent = RequestAudit.Sent(
            method: relay.method, status: HTTPResponse.Status(code: status), bytesOut: bytesOut, errorCode: errorCode, createdSession: relay.createdSession,
            clientIP: admission.context.clientIP, elapsedNanoseconds: relay.started.elapsedNanoseconds
        )
        let head = relay.uncountedHead.map { (service: admission.serviceName, upstreamSeconds: $0) }
        observer.observed(route: admission.route, caller: admission.context.caller, call: call, sent: sent, head: head, memo: &observations)
    }

    /// The access log's line, when the response head is ready (as the full pipeline's): before
    /// the client can have it.
    private func logAccess(_ relay: Relay, status: Int) {
        guard let accessLog = pipeline.accessLog else { return }
        let admission = relay.admission
        let call = admission.context.call
        accessLog.info("request", metadata: [
            "method": "\(relay.method)", "path": "\(admission.request.uri.path)", "status": "\(status)",
            "duration_ms": "\(relay.started.elapsedNanoseconds / 1_000_000)", "router": "\(admission.route.router.name)",
            "user": "\(admission.context.caller?.claims.login ?? "")", "mcp_method": "\(call?.method ?? "")",
            "tool": "\(call?.method == "tools/call" ? call?.target ?? "" : "")", "ip": "\(admission.context.clientIP ?? "")",
            "relay": "fast",
        ])
    }
}

/// Puts a `FastRelay` behind Hummingbird's `HTTPConnectionStateHandler` once the connection's
/// HTTP handlers are in place (after the first request head: the upgrade pipeline adds them only
/// then), and steps aside. An additional channel handler is added before that state handler,
/// where requests it answered itself would look idle to it.
final class FastRelayInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let makeRelay: () -> FastRelay
    /// Starts Hummingbird's handling of the connection, which then waits until the relay needs it
    /// (`HTTP1UpgradeChannel.defersHTTP`); nil: it runs already.
    var startHTTP: (() throws -> Void)?

    init(_ makeRelay: @escaping () -> FastRelay) {
        self.makeRelay = makeRelay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let operations = context.pipeline.syncOperations
        var installed = false
        if let state = try? operations.handler(type: HTTPConnectionStateHandler.self) {
            let relay = makeRelay()
            if let startHTTP { relay.http = .deferred(startHTTP) }
            installed = (try? operations.addHandler(relay, position: .after(state))) != nil
        }
        if !installed, let startHTTP {
            do {
                try startHTTP()
            } catch {
                context.close(promise: nil)
                return
            }
        }
        startHTTP = nil
        context.fireChannelRead(data)
        operations.removeHandler(context: context, promise: nil)
    }
}

/// The `Date` of the answers the gateway makes itself on the fast relay (RFC 9110 §6.6.1), as
/// Hummingbird adds it to the full pipeline's: formatted once a second.
enum HTTPDate {
    private static let cached = Mutex<(second: Int, text: String)>((-1, ""))
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func now() -> String {
        let second = Int(time(nil))
        if let hit = cached.withLock({ $0.second == second ? $0.text : nil }) { return hit }
        let text = format(secondsSince1970: second)
        cached.withLock { $0 = (second, text) }
        return text
    }

    /// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func format(secondsSince1970 second: Int) -> String {
        var seconds = time_t(second)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}

