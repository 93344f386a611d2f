package import MCPTransport
package import GatewayAuth
import NIOFoundationEssentialsCompat
import AuthorizationServer
import Foundation
import GatewayConfig
package import HTTPTypes
package import Hummingbird
import Logging
import MCPMessages
package import MCPTranslation
import NIOCore
package import GatewayCluster

/// Serves the session-based Streamable HTTP transport (2025-03-26 … 2025-11-25) for a stdio
/// service: `initialize` spawns (or takes a spare) child and mints `Mcp-Session-Id`; requests answer
/// with JSON, or SSE when the child sends anything before its response; GET opens the session's
/// stream; DELETE ends the session.
package struct StdioBridge: Sendable {
    package static let supportedVersions = MCPVersions.sessionBased
    package static let sessionHeader = MCPHeaders.sessionID
    package static let versionHeader = MCPHeaders.protocolVersion
    package static let lastEventIDHeader = MCPHeaders.lastEventID

    package let registry: StdioRegistry
    /// Who each session belongs to (router and caller), checked on every request naming one.
    package let bindings: SessionBindings
    package let inputRequired = ParkedRequests<ParkedChildAsk>()
    package let bridgeAsks = BridgeAsks()

    /// Where a session this process does not hold is, so that the request is forwarded there or
    /// the session taken over.
    package let locator: SessionLocator

    package init(registry: StdioRegistry, bindings: SessionBindings, cluster: ClusterMembership? = nil, forwards: Bool = false) {
        self.registry = registry
        self.bindings = bindings
        self.locator = SessionLocator(bindings: bindings, cluster: cluster, forwards: forwards)
    }

    /// `caller` is the subject of the request's token on protected routes: a session belongs to the
    /// identity that created it, and is not found (404) for anyone else.
    package func handle(_ exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> Response {
        let (request, verified) = (exchange.request, exchange.caller)
        let caller = verified?.claims.sub
        let owner = exchange.owner
        switch request.method {
        case .post where manager.service.passIdentity && request.headers.value(of: Self.sessionHeader) == nil:
            return try await post(exchange, manager: manager, caller: caller, owner: owner, identity: verified.map(Self.identityEnvironment) ?? [:])
        case .post: return try await post(exchange, manager: manager, caller: caller, owner: owner)
        case .get: return try await get(exchange, manager: manager)
        case .delete: return try await delete(exchange, manager: manager)
        default: throw .methodNotAllowed(method: request.method.rawValue)
        }
    }

    // MARK: POST

    /// The session `id` names, for its owner only (bound router and caller, then the process's
    /// own record of its creator); anyone else gets the 404 of an unknown session. A session this
    /// process does not hold is forwarded to the instance that does, or taken over when that
    /// instance is gone (see `Location`).
    private func session(id: String, exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> (StdioSessionManager, LegacySession) {
        switch try await locate(id, exchange: exchange, service: manager.service.name) {
        case .here(let manager, let session): return (manager, session)
        case .orphaned(let record): return try await takeOver(id, record: record, exchange: exchange, manager: manager)
        }
    }

    /// Where a session the caller owns is.
    private enum Location {
        /// Held by this process.
        case here(StdioSessionManager, LegacySession)
        /// Held by no live instance (its instance is gone or stopping, or released it).
        case orphaned(SessionRecord)
    }

    /// Throws `heldElsewhere` for a session another live instance holds (the pipeline forwards
    /// the request there), and 404 for one that ended on this instance or belongs to someone else.
    private func locate(_ id: String, exchange: MCPExchange, service: String) async throws(GatewayError) -> Location {
        let caller = exchange.caller?.claims.sub
        do { try await bindings.check(id, owner: exchange.owner) } catch { throw GatewayError(error) }
        if let found = registry.session(serviceName: service, id: id) {
            guard found.1.owner == caller else { throw .sessionNotFound }
            return .here(found.0, found.1)
        }
        let needsChild = exchange.request.method == .post && (exchange.call.parsed.flatMap { try? $0.get() }.map(Self.containsRequest) ?? true)
        return .orphaned(try await locator.orphan(id, owner: exchange.owner, atHopLimit: exchange.context.atHopLimit, needsChild: needsChild))
    }

    /// Takes over a session whose instance is gone: a new child is started, the client's recorded
    /// `initialize` and `notifications/initialized` replayed to it, and the session served under
    /// the same id. The client sees no error; the child's own state before is lost. One taker at a
    /// time (a lock in the store): others wait for its result.
    private func takeOver(_ id: String, record: SessionRecord, exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> (StdioSessionManager, LegacySession) {
        guard record.kind == "stdio", record.service == manager.service.name, let text = record.initialize,
              let initialize = try? JSONRPCMessage(parsing: ByteBuffer(string: text)), initialize.method == "initialize"
        else { throw .sessionNotFound }
        let locked: Bool
        do { locked = try await bindings.lockTakeover(id, for: manager.service.startTimeout + .seconds(5)) } catch { throw GatewayError(error) }
        guard locked else { return try await awaitTakeover(id, exchange: exchange, manager: manager) }
        let caller = exchange.caller?.claims.sub
        let requester = caller ?? "address:" + ClientAddress.limitKey(exchange.context.clientIP)
        let identity = manager.service.passIdentity ? exchange.caller.map(Self.identityEnvironment) ?? [:] : nil
        do throws(GatewayError) {
            let answer = try await self.initialize(initialize, request: exchange.request, manager: manager, caller: caller, owner: exchange.owner, identity: identity, requester: requester, resuming: id)
            guard answer.status == .ok, let (owner, session) = registry.session(serviceName: manager.service.name, id: id) else {
                throw GatewayError.stdioStartFailed(service: manager.service.name, detail: "the MCP server did not accept the session's initialize again")
            }
            if session.modernMeta == nil, let initialized = try? JSONRPCMessage(parsing: ByteBuffer(string: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)) {
                try? session.sendNotifications([initialized])
            }
            session.reestablished = true
            do throws(GatewayError) {
                try await locator.adopt(id, record: record)
            } catch {
                await manager.end(sessionID: id, reason: "another gateway instance took the session over first")
                throw error
            }
            await bindings.unlockTakeover(id)
            exchange.context.logger.warning("session re-established on this instance: its previous gateway instance is gone; the MCP server's own state of the session was lost", metadata: [
                "session": "\(MCPSessionID.logged(id))", "service": "\(manager.service.name)", "previousInstance": "\(record.instance ?? "released")",
            ])
            return (owner, session)
        } catch {
            await bindings.unlockTakeover(id)
            throw error
        }
    }

    /// Another request is taking the session over (here or on another instance): its outcome,
    /// read until the taker's lock would have expired.
    private func awaitTakeover(_ id: String, exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> (StdioSessionManager, LegacySession) {
        let deadline = ContinuousClock.now + manager.service.startTimeout + .seconds(5)
        while ContinuousClock.now < deadline {
            guard (try? await Task.sleep(for: .milliseconds(50))) != nil else { throw .sessionNotFound }
            if let found = registry.session(serviceName: manager.service.name, id: id) { return found }
            if let record = try? await bindings.currentRecord(id), let instance = record.instance, instance != bindings.instanceID,
               case .live(let url?) = try? await locator.cluster?.placement(of: instance), locator.forwards, !exchange.context.atHopLimit
            {
                throw .heldElsewhere(instance: instance, url: url)
            }
        }
        throw .stdioStartTimeout(service: manager.service.name, timeout: manager.service.startTimeout)
    }

    package static func identityEnvironment(_ caller: VerifiedCaller) -> [String: String] {
        ["MCP_GATEWAY_USER": caller.claims.login, "MCP_GATEWAY_SUBJECT": caller.claims.sub, "MCP_GATEWAY_CLIENT_ID": caller.claims.client_id]
    }

    private func post(_ exchange: MCPExchange, manager: StdioSessionManager, caller: String?, owner sessionOwner: SessionOwner, identity: [String: String]? = nil) async throws(GatewayError) -> Response {
        let (request, call, context) = (exchange.request, exchange.call, exchange.context)
        let payload: JSONRPCPayload
        switch call.parsed {
        case .success(let parsed):
            payload = parsed
        case .failure(.invalidJSON), nil:
            throw .badRequest(code: JSONRPCErrorResponse.parseError, message: "Parse error: the body is not valid JSON")
        case .failure(.invalidMessage(let detail)):
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: \(detail)")
        }

        guard let sessionID = request.headers.value(of: Self.sessionHeader) else {
            return try await startSession(payload, request: request, context: context, manager: manager, caller: caller, owner: sessionOwner, identity: identity)
        }
        // The session's own manager: after a reload it may be an older one, with its own settings.
        let (owner, session) = try await session(id: sessionID, exchange: exchange, manager: manager)
        try checkProtocolVersion(request)
        // A stopping instance hands its sessions on: a new request goes to a serving instance
        // (which takes the session over), while answers and notifications for the requests this
        // child is still running stay here.
        if let elsewhere = await locator.whileDraining(sessionID, needsChild: Self.containsRequest(payload), atHopLimit: context.atHopLimit, forwarded: context.forwarded) { throw elsewhere }
        var messages: [JSONRPCMessage]
        switch payload {
        case .single(let message):
            messages = [message]
        case .batch(let batch):
            // JSON-RPC batching was removed in 2025-06-18.
            guard let version = session.protocolVersion, version < "2025-06-18" else {
                throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: JSON-RPC batches are not supported by protocol version \(session.protocolVersion ?? "?")")
            }
            messages = batch
        }
        if messages.contains(where: { $0.method == "initialize" }) {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: the session is already initialized")
        }
        if let stamp = session.modernMeta {
            // A modern-only child: no handshake notifications; every request carries the client's
            // version, identity and capabilities in _meta.
            messages = messages.filter { $0.method != "notifications/initialized" }.map { EraRewrite.stamping($0, meta: stamp) }
        }
        let requests = messages.filter(\.isRequest)
        var others = messages.filter { !$0.isRequest }
        if session.modernMeta != nil, let sessionID = session.sessionID {
            // The client's answers to asks the gateway relayed for a 2026-07-28 child.
            others = others.filter { !bridgeAsks.resume(session: sessionID, answer: $0) }
        }
        do {
            if !others.isEmpty { try session.sendNotifications(others) }
            guard !requests.isEmpty else { return Response(status: .accepted) }
            if let stamp = session.modernMeta, requests.count == 1, let sessionID = session.sessionID,
               EraRewrite.declares(stamp: stamp, anyOf: ["elicitation", "sampling", "roots"])
            {
                return await relayingInputRequired(requests[0], request: request, session: session, sessionID: sessionID, stamp: stamp, timeout: owner.service.requestTimeout)
            }
            let subscription = try session.sendRequests(requests, timeout: owner.service.requestTimeout)
            // A 2026-07-28 child asking for input a client declared no capability for (or asking
            // in a batch): the client gets a precise error instead of a result it cannot read.
            let transform: (@Sendable (ByteBuffer) -> ByteBuffer)? = session.modernMeta == nil ? nil : EraRewrite.refusingInputRequired
            return await respond(to: request, session: session, subscription: subscription, single: requests.count == 1, extraHeaders: [:], transform: transform)
        } catch {
            throw .sessionNotFound
        }
    }

    /// A POST without a session id: an `initialize` starting a session. (A function of its own:
    /// its temporaries stay out of the frame every session request allocates.)
    private func startSession(
        _ payload: JSONRPCPayload, request: Request, context: TransportContext, manager: StdioSessionManager, caller: String?, owner: SessionOwner, identity: [String: String]?
    ) async throws(GatewayError) -> Response {
        guard case .single(let message) = payload, message.method == "initialize", message.isRequest else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Bad Request: Mcp-Session-Id header is required (send initialize first)")
        }
        // A stopping instance starts no session: another instance takes the client.
        if let elsewhere = await locator.elsewhereForNewSession(atHopLimit: context.atHopLimit) { throw elsewhere }
        // maxSessionsPerUser counts per signed-in user; anonymous callers per address.
        let requester = caller ?? "address:" + ClientAddress.limitKey(context.clientIP)
        return try await initialize(message, request: request, manager: manager, caller: caller, owner: owner, identity: identity, requester: requester)
    }

    /// `resuming`: the id of a session being taken over (recorded already), instead of a new one.
    private func initialize(_ message: JSONRPCMessage, request: Request, manager: StdioSessionManager, caller: String?, owner: SessionOwner, identity: [String: String]?, requester: String, resuming: String? = nil) async throws(GatewayError) -> Response {
        if manager.speaksOnly2026 {
            return try await initializeModernOnly(message, manager: manager, caller: caller, owner: owner, identity: identity, requester: requester, resuming: resuming)
        }
        let (session, subscription) = try await begin(message, manager: manager, identity: identity, requester: requester)
        // Collect everything up to the initialize response: the session id can only be handed out
        // once the child has accepted.
        var interim: [(String, ByteBuffer)] = []
        var final: ByteBuffer?
        for await item in subscription.items {
            guard case .message(let eventID, let bytes, let isFinal) = item else { break }
            if isFinal {
                final = bytes
                break
            }
            interim.append((eventID, bytes))
        }
        session.readerStopped(subscription)
        guard let final, let response = try? JSONRPCMessage(parsing: final) else {
            await manager.abandon(session, reason: "the MCP server ended before answering initialize")
            throw .stdioStartFailed(service: manager.service.name, detail: "the MCP server ended before answering initialize")
        }
        if response.kind == .errorResponse, response.value(at: ["error", "code"]) == String(ModernProtocol.unsupportedVersion) {
            // A 2026-07-28-only child. A server may bind its process to the era of the first
            // request it saw (the SDK's do): this one has seen initialize, so a fresh process is
            // asked with server/discover first, and so is every later child of these settings.
            await manager.abandon(session, reason: "the MCP server speaks 2026-07-28 only; starting it again with server/discover")
            manager.noteSpeaksOnly2026()
            return try await initializeModernOnly(message, manager: manager, caller: caller, owner: owner, identity: identity, requester: requester, resuming: resuming)
        }
        guard response.kind == .response else {
            // Either the child answered initialize with an error (relayed as is), or the session
            // ended first: the child did not answer in time (504) or exited (502).
            let ending = session.ending
            await manager.abandon(session, reason: "initialize failed")
            switch ending {
            case .startTimeout: throw .stdioStartTimeout(service: manager.service.name, timeout: manager.service.startTimeout)
            case .childExited, .ended: throw .stdioStartFailed(service: manager.service.name, detail: session.closedReason ?? "the session ended")
            case nil: return MCPResponses.jsonResponse(final, headers: [:])
            }
        }
        let version = response.string(at: ["result", "protocolVersion"])
        let sessionID = manager.activate(session, protocolVersion: version, owner: caller, resuming: resuming)
        if resuming == nil {
            do {
                try await bindings.bind(sessionID, to: owner, details: Self.details(of: message, service: manager.service.name, version: version))
            } catch {
                await manager.end(sessionID: sessionID, reason: "the session could not be recorded")
                throw GatewayError(error)
            }
        }
        let headers: HTTPFields = [Self.sessionHeader: sessionID]
        if interim.isEmpty {
            return MCPResponses.jsonResponse(final, headers: headers)
        }
        var events = interim.map { SSEEncoding.event(id: $0.0, data: $0.1) }
        events.append(SSEEncoding.event(id: nil, data: final))
        var fields = MCPResponses.eventStreamHeaders
        fields.append(contentsOf: headers)
        return Response(status: .ok, headers: fields, body: ResponseBody(contentsOf: events))
    }

    static func containsRequest(_ payload: JSONRPCPayload) -> Bool {
        switch payload {
        case .single(let message): message.isRequest
        case .batch(let messages): messages.contains(where: \.isRequest)
        }
    }

    /// What another instance needs to take the session over: the client's initialize as sent.
    static func details(of initialize: JSONRPCMessage, service: String, version: String?) -> SessionDetails {
        SessionDetails(service: service, kind: "stdio", initialize: String(buffer: initialize.bytes), protocolVersion: version)
    }

    /// A child started (spare or spawned) with `first` as its first message, mapped to gateway errors.
    private func begin(_ first: JSONRPCMessage, manager: StdioSessionManager, identity: [String: String]?, requester: String) async throws(GatewayError)
        -> (LegacySession, LegacySession.Subscription)
    {
        do {
            return try await manager.beginInitialize(first, identity: identity, requester: requester)
        } catch {
            throw GatewayError(error, service: manager.service.name)
        }
    }

    /// A session-based client's `initialize` for a service known to speak 2026-07-28 only: a
    /// child started with `server/discover`, and the initialize answered from its DiscoverResult.
    private func initializeModernOnly(_ message: JSONRPCMessage, manager: StdioSessionManager, caller: String?, owner: SessionOwner, identity: [String: String]?, requester: String, resuming: String?) async throws(GatewayError) -> Response {
        let probe: JSONRPCMessage
        do { probe = try JSONRPCMessage(parsing: EraRewrite.discoverProbe) } catch { throw .stdioStartFailed(service: manager.service.name, detail: "\(error)") }
        let (session, subscription) = try await begin(probe, manager: manager, identity: identity, requester: requester)
        var final: ByteBuffer?
        for await item in subscription.items {
            guard case .message(_, let bytes, let isFinal) = item else { break }
            if isFinal {
                final = bytes
                break
            }
        }
        session.readerStopped(subscription)
        guard let final, let object = (try? JSONSerialization.jsonObject(with: Data(buffer: final))) as? [String: Any],
              let result = object["result"] as? [String: Any]
        else {
            await manager.abandon(session, reason: "the MCP server refused initialize and server/discover")
            throw .stdioStartFailed(service: manager.service.name, detail: "the MCP server refused initialize and server/discover")
        }
        return try await initializeForModernChild(message, session: session, manager: manager, caller: caller, owner: owner, discovered: result, resuming: resuming)
    }

    // MARK: GET

    private func get(_ exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> Response {
        let request = exchange.request
        let accept = request.headers.value(of: .accept) ?? ""
        guard accept.contains("text/event-stream") || accept.contains("*/*") else {
            throw .notAcceptable(message: "GET on an MCP endpoint opens an event stream: send Accept: text/event-stream")
        }
        guard let sessionID = request.headers.value(of: Self.sessionHeader) else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Bad Request: Mcp-Session-Id header is required")
        }
        let (_, session) = try await session(id: sessionID, exchange: exchange, manager: manager)
        try checkProtocolVersion(request)
        if let elsewhere = await locator.whileDraining(sessionID, needsChild: false, atHopLimit: exchange.context.atHopLimit, forwarded: exchange.context.forwarded) { throw elsewhere }
        if session.reestablished, let lastEventID = request.headers.value(of: Self.lastEventIDHeader) {
            exchange.context.logger.notice("a stream of a re-established session resumes without the events sent before the takeover", metadata: [
                "session": "\(MCPSessionID.logged(sessionID))", "lastEventID": "\(lastEventID)",
            ])
        }
        let subscription: LegacySession.Subscription
        do {
            subscription = try session.attachStream(lastEventID: request.headers.value(of: Self.lastEventIDHeader))
        } catch {
            switch error {
            case .alreadyAttached: throw .streamConflict
            case .closed: throw .sessionNotFound
            }
        }
        return sseResponse(to: request, session: session, subscription: subscription, first: nil, extraHeaders: [:])
    }

    // MARK: DELETE

    private func delete(_ exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> Response {
        guard let sessionID = exchange.request.headers.value(of: Self.sessionHeader) else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Bad Request: Mcp-Session-Id header is required")
        }
        // A session no live instance holds has no child to end: its record goes.
        if case .here(let manager, _) = try await locate(sessionID, exchange: exchange, service: manager.service.name) {
            await manager.end(sessionID: sessionID, reason: "client sent DELETE")
        }
        await bindings.unbind(sessionID)
        return Response(status: .noContent)
    }

    // MARK: responses

    private func checkProtocolVersion(_ request: Request) throws(GatewayError) {
        guard let version = request.headers.value(of: Self.versionHeader) else { return }
        guard Self.supportedVersions.contains(version) else {
            throw .badRequest(
                code: JSONRPCErrorResponse.invalidRequest,
                message: "Bad Request: unsupported MCP-Protocol-Version \(version); supported: \(Self.supportedVersions.joined(separator: ", "))"
            )
        }
    }

    /// JSON when the first thing the child sends is the (only) response; otherwise an SSE stream.
    /// `transform` rewrites each message on its way to the client.
    private func respond(
        to request: Request, session: LegacySession, subscription: LegacySession.Subscription, single: Bool, extraHeaders: HTTPFields,
        transform: (@Sendable (ByteBuffer) -> ByteBuffer)? = nil
    ) async -> Response {
        let iterator = IteratorBox(subscription.items.makeAsyncIterator())
        let first = await iterator.next()
        switch first {
        case .message(_, let bytes, true) where single:
            // The answer of the stream's only request: the stream is complete, and the session
            // dropped it as it handed the answer over (no `readerStopped` to report).
            return MCPResponses.jsonResponse(transform?(bytes) ?? bytes, headers: extraHeaders)
        case .none, .end:
            session.readerStopped(subscription)
            let error = JSONRPCErrorResponse.make(rawID: nil, code: JSONRPCErrorResponse.internalError, message: "the session ended")
            return MCPResponses.jsonResponse(error, headers: extraHeaders)
        case .message:
            return sseResponse(to: request, session: session, subscription: subscription, first: first, iterator: iterator, extraHeaders: extraHeaders, transform: transform)
        }
    }

    private func sseResponse(
        to request: Request, session: LegacySession, subscription: LegacySession.Subscription, first: StreamItem?,
        iterator: IteratorBox<StreamItem>? = nil, extraHeaders: HTTPFields, transform: (@Sendable (ByteBuffer) -> ByteBuffer)? = nil
    ) -> Response {
        let iterator = iterator ?? IteratorBox(subscription.items.makeAsyncIterator())
        var headers = MCPResponses.eventStreamHeaders
        headers.append(contentsOf: extraHeaders)
        let body = ResponseBody { writer in
            defer { session.readerStopped(subscription) }
            if case .message(let eventID, let bytes, _) = first {
                try await writer.write(SSEEncoding.event(id: eventID, data: transform?(bytes) ?? bytes))
            }
            // Stop at once when the client goes away, so the stream's messages buffer for a resume.
            try await request.cancellingOnInboundClose {
                while let item = await iterator.next() {
                    guard case .message(let eventID, let bytes, _) = item else { break }
                    try await writer.write(SSEEncoding.event(id: eventID, data: transform?(bytes) ?? bytes))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }
}

extension GatewayError {
    /// A stdio service that could not give the request a child.
    package init(_ failure: StdioSessionManager.Failure, service: String) {
        switch failure {
        case .atCapacity(let limit): self = .stdioAtCapacity(service: service, limit: limit)
        case .atUserLimit(let limit): self = .stdioUserLimit(service: service, limit: limit)
        case .spawnFailed(let detail), .childExited(let detail): self = .stdioStartFailed(service: service, detail: detail)
        case .shuttingDown: self = .stdioShuttingDown(service: service)
        }
    }
}
