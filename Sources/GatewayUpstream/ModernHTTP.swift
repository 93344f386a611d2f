package import MCPTransport
package import GatewayAuth
import NIOFoundationEssentialsCompat
package import AuthorizationServer
package import AsyncHTTPClient
import Foundation
import GatewayConfig
import HTTPTypes
package import Hummingbird
package import Logging
import MCPMessages
package import MCPTranslation
package import NIOCore
package import NIOHTTP1
import Synchronization

/// 2026-07-28 clients on an HTTP route whose upstream speaks only the session-based protocol.
/// The upstream's era is probed once per upstream URL with `server/discover` (cached); a modern
/// upstream gets modern requests proxied as they are. For a legacy upstream the gateway is the
/// session-based client: one upstream session per identity (`initialize` once, `Mcp-Session-Id`
/// kept, re-initialized once if the upstream forgets it), requests forwarded without the modern
/// `_meta`, results given `resultType` (and `ttlMs`/`cacheScope` where 2026-07-28 wants them),
/// notifications relayed as SSE events as they come, the upstream's asks turned into
/// Multi Round-Trip Requests, and `subscriptions/listen` served from the upstream session's GET
/// stream. Session-based clients of 2026-07-28-only upstreams are bridged the
/// other way (`legacyInitialize`, `bridge`).
package final class ModernHTTPTranslator: Sendable {
    package enum Era: Sendable { case modern, legacy }

    package struct UpstreamSession: Sendable {
        package let id: String
        package let protocolVersion: String
        package let initializeResult: [String: SendableJSON]
    }

    /// Session-based clients bridged to 2026-07-28-only upstreams: the gateway-minted session id →
    /// who owns it and the `_meta` members stamped on each forwarded request.
    package struct BridgedSession: Sendable {
        package let owner: String?
        package let router: String
        package let meta: String
    }

    private let bridged = Mutex<[String: BridgedSession]>([:])
    /// Ownership of the sessions bridged here and of those passed on from upstreams.
    package let bindings: SessionBindings
    /// Signs the caller's identity for upstreams that ask for it (`identityToken`), as the proxy does.
    package let identityTokens: IdentityTokens?

    /// Where a bridged session this process does not hold is (another instance, or none).
    package let locator: SessionLocator?

    package init(bindings: SessionBindings, identityTokens: IdentityTokens? = nil, locator: SessionLocator? = nil) {
        self.bindings = bindings
        self.identityTokens = identityTokens
        self.locator = locator
    }

    /// A request of a bridged session this process does not hold: forwarded to the instance that
    /// does (`heldElsewhere`), or, when none lives, the session rebuilt here from its recorded
    /// `initialize` (its state is the client's `_meta`) and the request bridged.
    package func bridgeOrphan(_ exchange: MCPExchange, upstream: HTTPUpstream) async throws(GatewayError) -> Response {
        guard let locator, let id = exchange.call.sessionID else { throw .sessionNotFound }
        let record = try await locator.orphan(id, owner: exchange.owner, atHopLimit: exchange.context.atHopLimit, needsChild: exchange.request.method == .post && exchange.call.message?.isRequest != false)
        guard record.kind == "bridged", let text = record.initialize, let message = try? JSONRPCMessage(parsing: ByteBuffer(string: text)) else { throw .sessionNotFound }
        try await locator.adopt(id, record: record)
        remember(id, BridgedSession(owner: exchange.caller?.claims.sub, router: exchange.route.router.name, meta: ModernProtocol.clientStamp(from: message)))
        exchange.context.logger.warning("bridged session re-established on this instance: its previous gateway instance is gone", metadata: [
            "session": "\(MCPSessionID.logged(id))", "service": "\(upstream.service.name)",
        ])
        return try await bridge(exchange, upstream: upstream)
    }

    private func remember(_ id: String, _ session: BridgedSession) {
        bridged.withLock { sessions in
            // Bounded: clients that never say DELETE must not grow this forever.
            if sessions.count >= Self.maxBridgedSessions {
                for key in sessions.keys.prefix(Self.maxBridgedSessions / 10) { sessions[key] = nil }
            }
            sessions[id] = session
        }
    }

    /// The signed identity header of `upstream` (`identityToken`), added to a request the gateway
    /// writes for `caller`.
    func addIdentityToken(to headers: inout HTTPHeaders, upstream: HTTPUpstream, route: any TransportRoute, caller: VerifiedCaller?) async {
        guard let header = upstream.service.identityToken?.header,
              let token = await HTTPProxy.identityToken(identityTokens, upstream: upstream, route: route, caller: caller)
        else { return }
        headers.replaceOrAdd(name: header, value: token)
    }

    /// An upstream's ask waiting for a 2026-07-28 client's retry (Multi Round-Trip Requests): the
    /// upstream's answer stream stays open meanwhile.
    package struct ParkedAsk: Sendable {
        package let reader: UpstreamMessageReader
        package let session: UpstreamSession
        package let askID: String
        /// The id the gateway gave the original request in the upstream session.
        package let upstreamID: String
    }

    private let parkedAsks = ParkedRequests<ParkedAsk>()
    /// Answers of session-based clients to asks relayed from 2026-07-28-only upstreams.
    package let bridgeAsks = BridgeAsks()
    private let eras = UpstreamEras<Era>(ttl: eraTTL)
    private let sessions = Mutex<[String: UpstreamSession]>([:])
    /// Request ids in upstream sessions are the gateway's: clients of one identity share a
    /// session, and their own ids may collide.
    private let nextUpstreamID = Atomic<Int>(0)
    /// Per identity key: the upstream session whose GET stream feeds `subscriptions/listen`.
    private let hubs = Mutex<[String: (sessionID: String, hub: NotificationHub)]>([:])
    package static let eraTTL: Duration = .seconds(600)
    /// SSE comment interval on quiet streams to 2026-07-28 clients (as stdio's default).
    package let keepAlive: Duration = .seconds(15)
    package static let maxBridgedSessions = 10_000
    package static let maxBody = 16 * 1024 * 1024

    /// The upstream's era when one was learned, without waiting (nil: `era(of:logger:)` must
    /// probe). A stale one is still answered while one probe refreshes it in the background.
    package func knownEra(of upstream: HTTPUpstream, logger: Logger) -> Era? {
        eras.known(upstream.service.url) { { await Self.probeEra(of: upstream, logger: logger) } }
    }

    /// The upstream's era, probed with `server/discover` when unknown (one probe at a time per
    /// upstream URL; a stale era is answered while it is refreshed).
    package func era(of upstream: HTTPUpstream, logger: Logger) async -> Era {
        await eras.era(of: upstream.service.url) { { await Self.probeEra(of: upstream, logger: logger) } }
    }

    private static func probeEra(of upstream: HTTPUpstream, logger: Logger) async -> Era {
        // The 2026-07-28 HTTP rule: a modern request first; only a 4xx without a modern error body
        // means a session-based server. Anything else (including no answer) is proxied as it is.
        guard let response = await discover(upstream, logger: logger) else { return .modern }
        var era = Era.modern
        if (400..<500).contains(response.status.code) {
            let body = (try? await response.body.collect(upTo: 64 * 1024)) ?? ByteBuffer()
            let code = (try? JSONRPCMessage(parsing: body))?.value(at: ["error", "code"])
            let modernCodes = [ModernProtocol.headerMismatch, ModernProtocol.unsupportedVersion, JSONRPCErrorResponse.methodNotFound].map(String.init)
            if !(code.map(modernCodes.contains) ?? false) { era = .legacy }
        } else {
            _ = try? await response.body.collect(upTo: maxBody)
        }
        logger.info("upstream era detected", metadata: ["service": "\(upstream.service.name)", "era": "\(era == .modern ? "2026-07-28" : "session-based")"])
        return era
    }

    /// The gateway's own `server/discover` to the upstream (nil when it cannot be reached).
    package static func discover(_ upstream: HTTPUpstream, logger: Logger) async -> HTTPClientResponse? {
        var headers = baseHeaders(upstream)
        headers.replaceOrAdd(name: "MCP-Protocol-Version", value: ModernProtocol.versions[0])
        headers.replaceOrAdd(name: "Mcp-Method", value: "server/discover")
        return try? await upstream.send(method: .POST, query: nil, headers: headers, body: ByteBuffer(string: EraRewrite.discoverProbe), logger: logger)
    }

    /// Who is calling, for requests the gateway writes itself: the client's address and, on
    /// protected routes, the identity headers (as the proxy sends them).
    package static func addForwarding(to headers: inout HTTPHeaders, context: TransportContext, route: any TransportRoute, caller: VerifiedCaller?, host: String? = nil) {
        if let client = context.clientIP { headers.add(name: "X-Forwarded-For", value: client) }
        headers.add(name: "X-Forwarded-Proto", value: context.forwardedProto)
        if let host { headers.add(name: "X-Forwarded-Host", value: host) }
        if let caller {
            for (name, value) in IdentityHeaders.fields(caller, names: route.router.identityHeaders) { headers.add(name: name, value: value) }
        }
    }

    package static func baseHeaders(_ upstream: HTTPUpstream) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Accept", value: "application/json, text/event-stream")
        for header in upstream.service.headers { headers.add(name: header.name, value: header.value) }
        return headers
    }

    /// Ends the upstream sessions kept for a group's client session `scope` (the client's session
    /// ended): forgotten here and deleted at the upstream.
    package func endScope(_ scope: String, upstream: HTTPUpstream, logger: Logger) async {
        let suffix = "\u{0}group-session:" + scope
        let ended = sessions.withLock { sessions -> [UpstreamSession] in
            sessions.keys.filter { $0.hasSuffix(suffix) }.compactMap { sessions.removeValue(forKey: $0) }
        }
        for session in ended {
            var headers = Self.baseHeaders(upstream)
            headers.replaceOrAdd(name: "Mcp-Session-Id", value: session.id)
            headers.replaceOrAdd(name: "MCP-Protocol-Version", value: session.protocolVersion)
            if let response = try? await upstream.send(method: .DELETE, query: nil, headers: headers, body: nil, logger: logger) {
                _ = try? await response.body.collect(upTo: 64 * 1024)
            }
        }
    }

    /// The JSON-RPC response in an upstream answer (JSON or SSE), decoded; what precedes it is skipped.
    package static func finalResult(_ response: HTTPClientResponse) async -> [String: Any]? {
        let reader = UpstreamMessageReader(response)
        while let bytes = await reader.next() {
            guard let message = try? JSONRPCMessage(parsing: bytes), message.isResponse else { continue }
            return (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any]
        }
        return nil
    }

    private func session(for key: String, upstream: HTTPUpstream, logger: Logger) async throws(GatewayError) -> UpstreamSession {
        if let existing = sessions.withLock({ $0[key] }) { return existing }
        let response: HTTPClientResponse
        do {
            response = try await upstream.send(method: .POST, query: nil, headers: Self.baseHeaders(upstream), body: ByteBuffer(string: ModernProtocol.initializeRequest), logger: logger)
        } catch {
            throw .upstream(error)
        }
        guard response.status == .ok, let sessionID = response.headers.first(name: "mcp-session-id"),
              let object = await Self.finalResult(response), let result = object["result"] as? [String: Any]
        else {
            throw .upstream(UpstreamError(.protocolFailure, service: upstream.service.name, detail: "the upstream did not accept initialize from the gateway"))
        }
        let version = result["protocolVersion"] as? String ?? "2025-06-18"
        let session = UpstreamSession(id: sessionID, protocolVersion: version, initializeResult: result.mapValues(SendableJSON.init))
        await postToUpstream(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, session: session, upstream: upstream, logger: logger)
        sessions.withLock { $0[key] = session }
        return session
    }

    /// The hub relaying the list changes of the upstream session `session` (its GET stream), opened
    /// on first use; nil when the upstream offers no GET stream.
    private func notificationHub(
        for key: String, session: UpstreamSession, upstream: HTTPUpstream, context: TransportContext, route: any TransportRoute, caller: VerifiedCaller?
    ) async -> NotificationHub? {
        if let (sessionID, hub) = hubs.withLock({ $0[key] }), sessionID == session.id, !hub.hasEnded { return hub }
        var headers = Self.sessionHeaders(upstream, session: session)
        headers.replaceOrAdd(name: "Accept", value: "text/event-stream")
        headers.remove(name: "Content-Type")
        Self.addForwarding(to: &headers, context: context, route: route, caller: caller)
        await addIdentityToken(to: &headers, upstream: upstream, route: route, caller: caller)
        guard let response = try? await upstream.send(method: .GET, query: nil, headers: headers, body: nil, logger: context.logger),
              response.status == .ok, MediaTypes.isEventStream(response.headers.first(name: "content-type"))
        else { return nil }
        let reader = UpstreamMessageReader(response)
        let logger = context.logger
        let hub = NotificationHub(reading: { await reader.next() }, subscriber: { [self] uri, subscribe in
            let request: [String: Any] = [
                "jsonrpc": "2.0", "id": "mcpgw-\(nextUpstreamID.wrappingAdd(1, ordering: .relaxed).newValue)",
                "method": subscribe ? "resources/subscribe" : "resources/unsubscribe", "params": ["uri": uri],
            ]
            guard let data = try? JSONSerialization.data(withJSONObject: request, options: [.withoutEscapingSlashes]) else { return false }
            return await postToUpstream(String(decoding: data, as: UTF8.self), session: session, upstream: upstream, logger: logger)?["result"] != nil
        })
        return hubs.withLock { hubs in
            // Two listeners racing: the first hub stays (the second GET ends with its hub).
            if let (sessionID, existing) = hubs[key], sessionID == session.id, !existing.hasEnded { return existing }
            hubs[key] = (session.id, hub)
            return hub
        }
    }

    /// Whether `request` belongs to a session-based client bridged to a modern-only upstream.
    package func isBridged(_ request: Request) -> Bool {
        guard let id = request.headers[MCPHeaders.sessionID] else { return false }
        return bridged.withLock { $0[id] != nil }
    }

    /// A session-based client's `initialize` on an HTTP route whose upstream answers 2026-07-28
    /// requests: sent on; when the upstream refuses it as a modern-only server (-32022), the gateway
    /// answers it from the upstream's `server/discover` and bridges the session. Anything other
    /// than an initialize is proxied as usual.
    package func legacyInitialize(_ exchange: MCPExchange, upstream: HTTPUpstream, proxy: HTTPProxy) async throws(GatewayError) -> Response {
        let (request, context, route, caller) = (exchange.request, exchange.context, exchange.route, exchange.caller)
        guard let body = exchange.call.body, let message = exchange.call.message, message.method == "initialize", message.isRequest else {
            return try await proxy.forward(exchange, to: upstream)
        }
        // The same headers the proxy would send (forwarding and identity headers, no credentials).
        let identity = await HTTPProxy.identityToken(proxy.identityTokens, upstream: upstream, route: route, caller: caller)
        let headers = HTTPProxy.upstreamHeaders(for: request, context: context, upstream: upstream, caller: caller, identityToken: identity)
        let response: HTTPClientResponse
        do { response = try await upstream.send(method: .POST, query: request.uri.query, headers: headers, body: body, logger: context.logger) } catch { throw .upstream(error) }
        let answer = (try? await response.body.collect(upTo: Self.maxBody)) ?? ByteBuffer()
        let code = (try? JSONRPCMessage(parsing: answer))?.value(at: ["error", "code"])
        guard response.status == .badRequest, code == String(ModernProtocol.unsupportedVersion) else {
            // A server that takes initialize: its answer as it is; its session belongs to the caller.
            var fields = HeaderPolicy.clientResponseHeaders(from: response.headers)
            fields[.contentLength] = nil
            if let created = fields[HTTPProxy.sessionHeader] {
                do { try await bindings.bind(created, to: SessionOwner(route: route, caller: caller), details: SessionDetails(service: upstream.service.name, kind: "http")) } catch { throw GatewayError(error) }
            }
            return Response(status: .init(code: Int(response.status.code)), headers: fields, body: ResponseBody(byteBuffer: answer))
        }
        // A 2026-07-28-only upstream: initialize answered from its discover.
        var discoverResult: [String: Any] = [:]
        if let probe = await Self.discover(upstream, logger: context.logger), let object = await Self.finalResult(probe), let result = object["result"] as? [String: Any]
        {
            discoverResult = result
        } else {
            throw .upstream(UpstreamError(.protocolFailure, service: upstream.service.name, detail: "the upstream refused initialize and server/discover"))
        }
        let metaJSON = ModernProtocol.clientStamp(from: message)
        let sessionID = MCPSessionID.mint()
        let details = SessionDetails(service: upstream.service.name, kind: "bridged", initialize: String(buffer: message.bytes), protocolVersion: message.string(at: ["params", "protocolVersion"]))
        do { try await bindings.bind(sessionID, to: SessionOwner(route: route, caller: caller), details: details) } catch { throw GatewayError(error) }
        remember(sessionID, BridgedSession(owner: caller?.claims.sub, router: route.router.name, meta: metaJSON))
        let reply = ModernProtocol.initializeAnswer(to: message, discover: discoverResult, fallbackName: upstream.service.name)
        context.logger.info("session-based client bridged to a 2026-07-28-only upstream", metadata: ["service": "\(upstream.service.name)"])
        return MCPResponses.jsonResponse(reply, headers: [MCPHeaders.sessionID: sessionID])
    }

    /// A request of a bridged session: stamped with `_meta` and the 2026-07-28 headers and sent on.
    package func bridge(_ exchange: MCPExchange, upstream: HTTPUpstream) async throws(GatewayError) -> Response {
        let (request, context, route, caller) = (exchange.request, exchange.context, exchange.route, exchange.caller)
        guard let id = request.headers[MCPHeaders.sessionID],
              let session = bridged.withLock({ $0[id] }), session.owner == caller?.claims.sub, session.router == route.router.name
        else { throw .sessionNotFound }
        do { try await bindings.check(id, owner: SessionOwner(route: route, caller: caller)) } catch { throw GatewayError(error) }
        switch request.method {
        case .delete:
            bridged.withLock { _ = $0.removeValue(forKey: id) }
            await bindings.unbind(id)
            return Response(status: .noContent)
        case .get:
            // 2026-07-28 servers have no standalone stream.
            var response = Response(status: .methodNotAllowed)
            response.headers[.allow] = "POST, DELETE"
            return response
        default:
            break
        }
        guard let message = exchange.call.message else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: one JSON-RPC message per POST")
        }
        // The client's answer to an ask relayed from the upstream.
        if message.isResponse {
            _ = bridgeAsks.resume(session: id, answer: message)
            return Response(status: .accepted)
        }
        guard let method = message.method else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: one JSON-RPC request or notification per POST")
        }
        if method == "notifications/initialized" { return Response(status: .accepted) }
        let stamped = EraRewrite.stamping(message, meta: session.meta)
        var headers = Self.baseHeaders(upstream)
        headers.add(name: "MCP-Protocol-Version", value: ModernProtocol.versions[0])
        headers.add(name: "Mcp-Method", value: method)
        if let name = message.string(at: ["params", "name"]) ?? message.string(at: ["params", "uri"]) {
            headers.add(name: "Mcp-Name", value: ModernProtocol.encodeHeader(name))
        }
        Self.addForwarding(to: &headers, context: context, route: route, caller: caller, host: request.head.authority)
        await addIdentityToken(to: &headers, upstream: upstream, route: route, caller: caller)
        let logger = context.logger
        let sendHeaders = headers
        let canAsk = EraRewrite.declares(stamp: session.meta, anyOf: ["elicitation", "sampling", "roots"])
        // One request (or retry) to the upstream: its SSE answer read message by message, so
        // progress reaches the client live.
        let exchange: BridgedExchange = { outgoing in
            guard let reply = try? await upstream.send(method: .POST, query: nil, headers: sendHeaders, body: EraRewrite.stamping(outgoing, meta: session.meta).bytes, logger: logger) else { return nil }
            return Self.messages(of: UpstreamMessageReader(reply))
        }
        let response: HTTPClientResponse
        do { response = try await upstream.send(method: .POST, query: request.uri.query, headers: headers, body: stamped.bytes, logger: context.logger) } catch { throw .upstream(error) }
        let isEventStream = MediaTypes.isEventStream(response.headers.first(name: "content-type"))
        if message.isRequest, response.status == .ok, isEventStream {
            return await MCPResponses.relayBridged(original: message, feed: Self.messages(of: UpstreamMessageReader(response)), sessionKey: id, asks: bridgeAsks, canAsk: canAsk, exchange: exchange)
        }
        var answer = (try? await response.body.collect(upTo: Self.maxBody)) ?? ByteBuffer()
        var fields = HeaderPolicy.clientResponseHeaders(from: response.headers)
        fields[.contentLength] = nil
        if message.isRequest, canAsk, EraRewrite.isInputRequired(answer) {
            // The upstream asks for input: relayed to the client as server→client requests.
            let only = answer
            let delivered = Mutex(false)
            let feed: BridgedMessages = { delivered.withLock { done in defer { done = true }; return done ? nil : (only, true) } }
            return await MCPResponses.relayBridged(original: message, feed: feed, sessionKey: id, asks: bridgeAsks, canAsk: true, exchange: exchange)
        }
        if MediaTypes.isJSON(fields[.contentType]) {
            answer = EraRewrite.refusingInputRequired(answer)
        }
        return Response(status: .init(code: Int(response.status.code)), headers: fields, body: ResponseBody(byteBuffer: answer))
    }

    /// An upstream answer as a message feed: a response is the final message.
    package static func messages(of reader: UpstreamMessageReader) -> BridgedMessages {
        {
            guard let bytes = await reader.next() else { return nil }
            return (bytes, (try? JSONRPCMessage(parsing: bytes))?.isResponse ?? false)
        }
    }

    /// Posts a message the gateway writes itself (a notification, an answer to the upstream's ask,
    /// a subscription request) in the upstream session; the upstream's JSON-RPC response, if any.
    @discardableResult
    package func postToUpstream(_ json: String, session: UpstreamSession, upstream: HTTPUpstream, logger: Logger) async -> [String: Any]? {
        guard let response = try? await upstream.send(method: .POST, query: nil, headers: Self.sessionHeaders(upstream, session: session), body: ByteBuffer(string: json), logger: logger) else {
            return nil
        }
        return await Self.finalResult(response)
    }

    /// The headers of a request in an upstream session.
    package static func sessionHeaders(_ upstream: HTTPUpstream, session: UpstreamSession) -> HTTPHeaders {
        var headers = baseHeaders(upstream)
        headers.add(name: "Mcp-Session-Id", value: session.id)
        headers.add(name: "MCP-Protocol-Version", value: session.protocolVersion)
        return headers
    }

    /// Reads the upstream's answer: notifications are kept for the client, an ask becomes an
    /// `InputRequiredResult` (or is refused to the upstream when the client cannot answer it), the
    /// response ends it.
    package func drive(
        _ reader: UpstreamMessageReader, rawID: String?, upstreamID: String, method: String, session: UpstreamSession, upstream: HTTPUpstream, key: String,
        request: Request, context: TransportContext, capabilities: String?
    ) async throws(GatewayError) -> Response {
        let logger = context.logger
        // The client closing its stream before the answer cancels the request (2026-07-28); in the
        // upstream's session-based protocol that takes a notifications/cancelled.
        let answered = Atomic<Bool>(false)
        let watcher = InboundCloseWatcher.watcher(for: context.channel)
        let closeToken = watcher?.onClose { [self] in
            guard !answered.load(ordering: .acquiring) else { return }
            Task {
                _ = await self.postToUpstream("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\(upstreamID),\"reason\":\"the client closed the response stream\"}}",
                                              session: session, upstream: upstream, logger: logger)
            }
        }
        let settle: @Sendable () -> Void = {
            answered.store(true, ordering: .releasing)
            watcher?.cancel(closeToken)
        }
        // The next message for the client: a notification, the result, or an InputRequiredResult
        // for an ask (parked); nil when the upstream ended without answering.
        let step: @Sendable () async -> (bytes: ByteBuffer, final: Bool)? = { [self] in
            while let bytes = await reader.next() {
                guard let message = try? JSONRPCMessage(parsing: bytes) else { continue }
                if message.isResponse {
                    settle()
                    return (EraRewrite.completeResult(for: method)(message.replacingID(with: rawID ?? "null"), true), true)
                }
                guard message.isRequest, let askMethod = message.method, let askID = message.rawID else { return (bytes, false) }
                guard let capability = EraRewrite.askCapabilities[askMethod], ModernProtocol.declaredCapabilities(capabilities).contains(capability) else {
                    await postToUpstream(String(buffer: JSONRPCErrorResponse.make(rawID: askID, code: JSONRPCErrorResponse.methodNotFound, message: "the client did not declare support for \(askMethod)")),
                                         session: session, upstream: upstream, logger: logger)
                    continue
                }
                // The request stays open upstream while the client answers: not a cancellation.
                settle()
                let token = parkedAsks.park(ParkedAsk(reader: reader, session: session, askID: askID, upstreamID: upstreamID), owner: key)
                return (ModernProtocol.inputRequiredResponse(rawID: rawID, askMethod: askMethod, askParams: message.value(at: ["params"]) ?? "{}", requestState: token), true)
            }
            return nil
        }
        guard let first = await step() else {
            settle()
            throw .upstream(UpstreamError(.protocolFailure, service: upstream.service.name, detail: "the upstream's answer held no JSON-RPC response"))
        }
        if first.final { return MCPResponses.jsonResponse(first.bytes, headers: [:]) }
        // Notifications (progress) reach the client as they come.
        return MCPResponses.eventStream(first: first.bytes, request: request, keepAlive: keepAlive, next: step)
    }

    /// Serves one modern request from a session-based upstream.
    package func handle(_ exchange: MCPExchange, upstream: HTTPUpstream) async throws(GatewayError) -> Response {
        let (request, context, route, caller) = (exchange.request, exchange.context, exchange.route, exchange.caller)
        let message = try ModernProtocol.validate(exchange.call, request: request)
        let rawID = message.rawID
        let method = message.method ?? ""
        let key = exchange.scopedKey(SessionOwner(route: route, caller: caller).key)
        var session = try await session(for: key, upstream: upstream, logger: context.logger)
        if method == "server/discover" {
            return MCPResponses.jsonResponse(EraRewrite.discoverResponse(rawID: rawID, initializeResult: session.initializeResult, modern: false), headers: [:])
        }
        if method == "subscriptions/listen" {
            // The upstream's list changes arrive on its GET stream (one per upstream session, shared
            // by the identity's listeners); without one, nothing can be acknowledged.
            let hub = await notificationHub(for: key, session: session, upstream: upstream, context: context, route: route, caller: caller)
            let capabilities = hub == nil ? [:] : (session.initializeResult["capabilities"]?.value as? [String: Any] ?? [:])
            return await MCPResponses.listen(message, rawID: rawID, capabilities: capabilities, hub: hub ?? NotificationHub(), request: request, keepAlive: keepAlive)
        }
        if let token = message.string(at: ["params", "requestState"]) {
            guard let parked = parkedAsks.take(token: token, owner: key) else {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.invalidParams, message: "requestState is unknown, expired or was issued to another user; send the request again without it", rawID: rawID)
            }
            await postToUpstream(ModernProtocol.answerToAsk(id: parked.askID, from: message), session: parked.session, upstream: upstream, logger: context.logger)
            return try await drive(parked.reader, rawID: rawID, upstreamID: parked.upstreamID, method: method, session: parked.session, upstream: upstream, key: key, request: request, context: context,
                                   capabilities: message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"]))
        }
        guard let forwarded = message.removingParamsMeta(ifOnlyKeysWithPrefix: ModernProtocol.metaPrefix) ?? EraRewrite.withoutModernMeta(message) else {
            return ModernProtocol.error(.badRequest, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request", rawID: rawID)
        }
        let upstreamID = "\"mcpgw-\(nextUpstreamID.wrappingAdd(1, ordering: .relaxed).newValue)\""
        let outgoing = forwarded.isRequest ? forwarded.replacingID(with: upstreamID) : forwarded.bytes
        for attempt in 0..<2 {
            var headers = Self.sessionHeaders(upstream, session: session)
            Self.addForwarding(to: &headers, context: context, route: route, caller: caller, host: request.head.authority)
            await addIdentityToken(to: &headers, upstream: upstream, route: route, caller: caller)
            let response: HTTPClientResponse
            do {
                response = try await upstream.send(method: .POST, query: request.uri.query, headers: headers, body: outgoing, logger: context.logger)
            } catch {
                throw .upstream(error)
            }
            if response.status == .notFound, attempt == 0 {
                // The upstream forgot the session (restart, expiry): start another once.
                _ = try? await response.body.collect(upTo: 1024 * 1024)
                sessions.withLock { _ = $0.removeValue(forKey: key) }
                session = try await self.session(for: key, upstream: upstream, logger: context.logger)
                continue
            }
            guard message.isRequest else {
                _ = try? await response.body.collect(upTo: 1024 * 1024)
                return Response(status: .accepted)
            }
            let reader = UpstreamMessageReader(response)
            return try await drive(reader, rawID: rawID, upstreamID: upstreamID, method: method, session: session, upstream: upstream, key: key, request: request, context: context,
                                   capabilities: message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"]))
        }
        throw .upstream(UpstreamError(.protocolFailure, service: upstream.service.name, detail: "the upstream lost its session twice"))
    }
}

/// The JSON-RPC messages of an upstream answer as they arrive: one for a JSON body, each `data`
/// of an SSE stream otherwise. Used by one task at a time (a parked ask hands it to the retry).
package final class UpstreamMessageReader: @unchecked Sendable {
    private var iterator: HTTPClientResponse.Body.AsyncIterator
    private let isEventStream: Bool
    private var finished = false
    private var jsonBody = ByteBuffer()
    /// Decodes bytes as they come (see `SSEDecoder`): no text decoding per chunk, no rescans.
    private var decoder = SSEDecoder(maxEventBytes: ModernHTTPTranslator.maxBody)
    private var unread = ByteBuffer()
    private var ready: [ByteBuffer] = []

    package init(_ response: HTTPClientResponse) {
        iterator = response.body.makeAsyncIterator()
        isEventStream = MediaTypes.isEventStream(response.headers.first(name: "content-type"))
    }

    package func next() async -> ByteBuffer? {
        if !isEventStream {
            guard !finished else { return nil }
            finished = true
            while let chunk = try? await iterator.next() {
                var chunk = chunk
                jsonBody.writeBuffer(&chunk)
                if jsonBody.readableBytes > ModernHTTPTranslator.maxBody { return nil }
            }
            return jsonBody.readableBytes > 0 ? jsonBody : nil
        }
        while ready.isEmpty {
            guard !finished, var chunk = try? await iterator.next() else {
                finished = true
                return nil
            }
            unread.writeBuffer(&chunk)
            do {
                while let event = try decoder.decode(buffer: &unread) {
                    if event.data.readableBytes > 0 { ready.append(event.data) }
                }
            } catch {
                finished = true
                return nil
            }
            // Reclaim consumed bytes only when that copies less than it frees: a huge event
            // arriving in small chunks must not be copied once per chunk.
            if unread.readerIndex > 64 * 1024, unread.readerIndex > unread.readableBytes { unread.discardReadBytes() }
        }
        return ready.removeFirst()
    }
}
