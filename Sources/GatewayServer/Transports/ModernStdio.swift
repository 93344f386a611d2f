import GatewayAuth
import NIOFoundationEssentialsCompat
import Crypto
import AuthorizationServer
import Foundation
import GatewayConfig
import GatewayStdio
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
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
/// The children serving 2026-07-28 clients, initialized by the gateway itself: per key (service
/// and identity, or service alone with `isolation: shared`) up to `pool.max` children, each request
/// going to the least busy one and a new child starting only when all are busy; plus `pool.min`
/// warm children per service, initialized ahead and handed to the first identity that needs one.
final class ModernSessions: Sendable {
    struct Entry: Sendable {
        let session: LegacySession
        /// The child answered `server/discover`: it speaks 2026-07-28 itself and gets requests as
        /// they are. Otherwise it was initialized as a session-based server and is translated for.
        let modern: Bool
        /// The child's DiscoverResult (modern) or InitializeResult (legacy) as a JSON object.
        let initializeResult: [String: SendableJSON]
        /// The child's own notifications (list changes) for `subscriptions/listen` streams;
        /// translated children only.
        var hub: NotificationHub? = nil
    }

    private struct Pool {
        var entries: [Entry] = []
        var starting: [Task<Entry, any Error>] = []
    }

    private struct State {
        var pools: [String: Pool] = [:]
        var warm: [String: [Entry]] = [:]
        var warming: [String: Int] = [:]
    }

    private enum Decision {
        case use(Entry)
        case assign(Entry)
        case create
        case wait(Task<Entry, any Error>)
    }

    private let state = Mutex(State())

    /// A child for `key`, taken, assigned or started per the pool settings.
    /// `changed` says whether a warm child was taken or a child started (then the warm set may need
    /// topping up); the common case, reusing a child, touches nothing else.
    func entry(
        service: StdioServiceConfiguration, scope: String, key: String, owner: String, create: @escaping @Sendable (_ warm: Bool) async throws -> Entry
    ) async throws -> (entry: Entry, changed: Bool) {
        while true {
            let decision: Decision = state.withLock { state in
                var pool = state.pools[key] ?? Pool()
                pool.entries.removeAll { if case .closed = $0.session.phase { true } else { false } }
                defer { state.pools[key] = pool }
                var warm = state.warm[scope] ?? []
                warm.removeAll { if case .closed = $0.session.phase { true } else { false } }
                defer { state.warm[scope] = warm }
                let plan = PoolPlan.choose(
                    loads: pool.entries.map(\.session.pendingCount), starting: pool.starting.count, warmAvailable: !warm.isEmpty, max: service.pool.max
                )
                switch plan {
                case .use(let index): return .use(pool.entries[index])
                case .takeWarm:
                    guard let taken = warm.popLast() else { return .create }
                    pool.entries.append(taken)
                    return .assign(taken)
                case .start: return .create
                case .waitForStarting: return pool.starting.first.map(Decision.wait) ?? .create
                }
            }
            switch decision {
            case .use(let entry):
                return (entry, false)
            case .assign(let entry):
                entry.session.assign(owner: owner, idleTimeout: service.pool.idleTimeout, neverIdle: false)
                return (entry, true)
            case .wait(let task):
                _ = try? await task.value
            case .create:
                let task = Task { try await create(false) }
                state.withLock { state in state.pools[key, default: Pool()].starting.append(task) }
                do {
                    let entry = try await task.value
                    state.withLock { state in
                        state.pools[key, default: Pool()].starting.removeAll { $0 == task }
                        state.pools[key, default: Pool()].entries.append(entry)
                    }
                    return (entry, true)
                } catch {
                    state.withLock { state in state.pools[key, default: Pool()].starting.removeAll { $0 == task } }
                    throw error
                }
            }
        }
    }

    /// The live child of `key`'s pool whose session id is `sessionID`.
    func entry(key: String, sessionID: String) -> Entry? {
        state.withLock { state in
            state.pools[key]?.entries.first { entry in
                if case .closed = entry.session.phase { return false }
                return entry.session.sessionID == sessionID
            }
        }
    }

    /// Keeps `pool.min` warm children for the service (started in the background).
    /// `scope` names the generation of the service's settings (its manager): pools and warm
    /// children of replaced settings are never handed out again.
    func keepWarm(service: StdioServiceConfiguration, scope: String, create: @escaping @Sendable (_ warm: Bool) async throws -> Entry) {
        guard service.pool.min > 0, !service.passIdentity else { return }
        let missing: Int = state.withLock { state in
            var warm = state.warm[scope] ?? []
            warm.removeAll { if case .closed = $0.session.phase { true } else { false } }
            state.warm[scope] = warm
            // Shared children count toward the minimum once assigned; per-user ones do not (each
            // new identity should find a warm child).
            let assigned = service.isolation == .shared ? (state.pools["\(scope)\u{0}shared"]?.entries.count ?? 0) : 0
            let missing = service.pool.min - warm.count - assigned - state.warming[scope, default: 0]
            if missing > 0 { state.warming[scope, default: 0] += missing }
            return max(0, missing)
        }
        for _ in 0..<missing {
            Task {
                let entry = try? await create(true)
                state.withLock { state in
                    state.warming[scope, default: 1] -= 1
                    if let entry { state.warm[scope, default: []].append(entry) }
                }
            }
        }
    }
}

/// Which child of a pool serves a request, decided on values (no processes): the least busy child
/// when it is idle or the pool is full; otherwise another child, a warm one if any is waiting.
enum PoolPlan: Equatable {
    /// The child at this index of the pool's children.
    case use(Int)
    /// Take a warm (initialized, unassigned) child into the pool.
    case takeWarm
    /// Start a new child.
    case start
    /// Every child is busy and the pool is full of children still starting: wait for one.
    case waitForStarting

    /// `loads`: requests in flight per live child; `starting`: children being started.
    static func choose(loads: [Int], starting: Int, warmAvailable: Bool, max: Int) -> PoolPlan {
        let leastBusy = loads.indices.min { loads[$0] < loads[$1] }
        let size = loads.count + starting
        if let leastBusy, loads[leastBusy] == 0 || size >= max { return .use(leastBusy) }
        if size < max { return warmAvailable ? .takeWarm : .start }
        return .waitForStarting
    }
}

extension StdioBridge {
    func handleModern(_ exchange: MCPExchange, manager: StdioSessionManager) async throws(GatewayError) -> Response {
        let (request, context, route, verified, call) = (exchange.request, exchange.context, exchange.route, exchange.caller, exchange.call)
        // Read in place with the scanner: no decoding of the body on the hot path.
        var message = try ModernProtocol.validate(call, request: request)
        let rawID = message.rawID
        let method = message.method ?? ""

        let service = manager.service
        let identityKey = service.isolation == .shared ? "shared" : (verified?.claims.sub ?? "anonymous")
        let identity = service.passIdentity ? verified.map(Self.identityEnvironment) : nil
        let owner = "modern:\(identityKey)"
        // Pools belong to the settings in force (the manager): after a reload that changed the
        // service, new requests get children started with the new command, args and env.
        let scope = String(manager.generation)
        let poolKey = "\(scope)\u{0}\(identityKey)"
        // The caller itself (router and subject), whatever pool serves it: parked requests, request
        // states and cancellations belong to it alone, even on a child several callers share.
        let requester = SessionOwner(route: route, caller: verified).key
        // A retry of a request a 2026-07-28 child answered with an InputRequiredResult goes back to
        // that child: its requestState may be sealed with that process's own key.
        var returning: ModernSessions.Entry?
        let presentedState = message.string(at: ["params", "requestState"])
        if let state = presentedState, state.hasPrefix(RequestStateAffinity.prefix) {
            guard let (sessionID, original) = RequestStateAffinity.parse(state, requester: requester),
                  let child = modernSessions.entry(key: poolKey, sessionID: sessionID), child.modern,
                  let restored = RequestStateAffinity.restoring(message, state: original)
            else {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.invalidParams, message: "requestState belongs to an MCP server process that has ended; send the request again without it", rawID: rawID)
            }
            returning = child
            message = restored
        }
        let entry: ModernSessions.Entry
        if let returning {
            entry = returning
        } else { do {
            let (found, changed) = try await modernSessions.entry(service: service, scope: scope, key: poolKey, owner: owner) { warm in
                try await Self.startModernSession(manager: manager, owner: owner, identity: identity, warm: warm)
            }
            entry = found
            if changed { keepWarm(manager) }
        } catch let error as GatewayError {
            throw error
        } catch {
            throw .stdioStartFailed(service: service.name, detail: "\(error)")
        } }

        if method == "server/discover" {
            return Self.jsonResponse(EraRewrite.discoverResponse(rawID: rawID, initializeResult: entry.initializeResult, modern: entry.modern), headers: [:])
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
            return await Self.listen(message, rawID: rawID, capabilities: capabilities, hub: hub, request: request, keepAlive: service.sseKeepAlive)
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
        _ message: JSONRPCMessage, request: Request, context: GatewayRequestContext, entry: ModernSessions.Entry, service: StdioServiceConfiguration,
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
                return Self.jsonResponse(first.bytes, headers: [:])
            }
            // Progress and other interim messages as they come, with keep-alive comments when quiet.
            return Self.eventStream(first: first.bytes, request: request, keepAlive: service.sseKeepAlive, onEnd: finish, next: next)
        } catch {
            return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
        }
    }

    /// Tops the service's warm children up to `pool.min`.
    func keepWarm(_ manager: StdioSessionManager) {
        modernSessions.keepWarm(service: manager.service, scope: String(manager.generation)) { warm in
            try await Self.startModernSession(manager: manager, owner: "modern:warm", identity: nil, warm: warm)
        }
    }

    /// Offers elicitation and sampling: a child's asks become Multi Round-Trip Requests to the
    /// 2026-07-28 client (refused by the gateway when that client did not declare the capability).
    static let initializeRequest = #"{"jsonrpc":"2.0","id":"mcp-gateway-init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{},"sampling":{}},"clientInfo":{"name":"mcp-gateway","version":"0.1.0"}}}"#

    /// Starts a child and learns its era (2026-07-28 stdio rule): `server/discover` first; a
    /// DiscoverResult naming 2026-07-28 means modern, anything else (an error, another version)
    /// means it is initialized as a session-based server on the same process.
    static func startModernSession(manager: StdioSessionManager, owner: String, identity: [String: String]?, warm: Bool) async throws -> ModernSessions.Entry {
        let (session, subscription) = try await manager.beginInitialize(try JSONRPCMessage(parsing: EraRewrite.discoverProbe), identity: identity)
        let answer = await finalMessage(subscription, session: session)
        if let answer, let result = answer["result"] as? [String: Any],
           (result["supportedVersions"] as? [String])?.contains(where: ModernProtocol.versions.contains) == true
        {
            _ = manager.activate(session, protocolVersion: ModernProtocol.versions[0], owner: owner)
            session.assign(owner: owner, idleTimeout: manager.service.pool.idleTimeout, neverIdle: warm)
            return ModernSessions.Entry(session: session, modern: true, initializeResult: result.mapValues(SendableJSON.init))
        }
        guard answer != nil else {
            let reason = session.closedReason ?? "the MCP server did not answer"
            await manager.abandon(session, reason: "start failed")
            throw GatewayError.stdioStartFailed(service: manager.service.name, detail: reason)
        }
        _ = manager.activate(session, protocolVersion: nil, owner: owner)
        let initialize = try session.sendRequests([try JSONRPCMessage(parsing: initializeRequest)], timeout: manager.service.startTimeout)
        guard let initialized = await finalMessage(initialize, session: session), let result = initialized["result"] as? [String: Any] else {
            let reason = session.closedReason ?? "the MCP server did not accept initialize"
            if let id = session.sessionID { await manager.end(sessionID: id, reason: "initialize failed") }
            throw GatewayError.stdioStartFailed(service: manager.service.name, detail: reason)
        }
        session.assign(owner: owner, idleTimeout: manager.service.pool.idleTimeout, neverIdle: warm)
        // The child's unsolicited notifications go to the hub, never into a request's stream.
        let hub = NotificationHub.following(session) { uri, subscribe in
            let request: [String: Any] = [
                "jsonrpc": "2.0", "id": "mcp-gateway-subscribe", "method": subscribe ? "resources/subscribe" : "resources/unsubscribe", "params": ["uri": uri],
            ]
            guard let data = try? JSONSerialization.data(withJSONObject: request), let message = try? JSONRPCMessage(parsing: ByteBuffer(bytes: data)),
                  let subscription = try? session.sendRequests([message], timeout: .seconds(30))
            else { return false }
            return (await finalAnswer(of: subscription, session: session)).flatMap { try? JSONRPCMessage(parsing: $0) }?.kind == .response
        }
        try session.sendNotifications([try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)])
        return ModernSessions.Entry(session: session, modern: false, initializeResult: result.mapValues(SendableJSON.init), hub: hub)
    }

    /// The response a stream ends with, decoded (nil when the stream ended without one).
    private static func finalMessage(_ subscription: LegacySession.Subscription, session: LegacySession) async -> [String: Any]? {
        await finalAnswer(of: subscription, session: session).flatMap { (try? JSONSerialization.jsonObject(with: Data(buffer: $0))) as? [String: Any] }
    }

}

extension StdioBridge {
    /// A session-based client's `initialize` to a 2026-07-28-only child: answered by the gateway
    /// from the child's `server/discover`; the session then stamps `_meta` on every request.
    /// `discovered`: the child's DiscoverResult when it was started with `server/discover` (a child
    /// that answered initialize's refusal is asked on the same process otherwise).
    func initializeForModernChild(
        _ message: JSONRPCMessage, session: LegacySession, manager: StdioSessionManager, caller: String?, owner: SessionOwner, discovered: [String: Any]? = nil
    ) async throws(GatewayError) -> Response {
        let requested = message.string(at: ["params", "protocolVersion"]) ?? "2025-11-25"
        let version = Self.supportedVersions.contains(requested) ? requested : Self.supportedVersions[Self.supportedVersions.count - 1]
        let sessionID = manager.activate(session, protocolVersion: version, owner: caller)
        let discoverResult: [String: Any]
        if let discovered {
            discoverResult = discovered
        } else { do {
            let probe = try session.sendRequests([try JSONRPCMessage(parsing: EraRewrite.discoverProbe)], timeout: manager.service.startTimeout)
            guard let object = await Self.finalMessage(probe, session: session), let result = object["result"] as? [String: Any]
            else { throw GatewayError.stdioStartFailed(service: manager.service.name, detail: "the MCP server refused initialize and server/discover") }
            discoverResult = result
        } catch {
            await manager.end(sessionID: sessionID, reason: "neither initialize nor server/discover succeeded")
            if let gatewayError = error as? GatewayError { throw gatewayError }
            throw .stdioStartFailed(service: manager.service.name, detail: "\(error)")
        } }
        do {
            try await bindings.bind(sessionID, to: owner)
        } catch {
            await manager.end(sessionID: sessionID, reason: "the session could not be recorded")
            throw GatewayError(error)
        }
        session.modernMeta = ModernProtocol.clientStamp(from: message)
        return Self.jsonResponse(ModernProtocol.initializeAnswer(to: message, discover: discoverResult, fallbackName: manager.service.name), headers: [Self.sessionHeader: sessionID])
    }

}

/// A translated child's request waiting for the client's answer to its ask.
struct ParkedChildAsk: Sendable {
    let session: LegacySession
    let subscription: LegacySession.Subscription
    let iterator: IteratorBox<StreamItem>
    /// The child's id of its ask (raw JSON).
    let childID: String
}

extension StdioBridge {

    /// Relays a translated child's answer to a 2026-07-28 client: progress and other notifications
    /// as SSE events while they come; the final result (with `resultType`); or, when the child asks
    /// the client something, an `InputRequiredResult` whose `requestState` parks the request.
    func driveTranslated(
        _ session: LegacySession, _ subscription: LegacySession.Subscription, _ iterator: IteratorBox<StreamItem>, request: Request, context: GatewayRequestContext,
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
            return Self.jsonResponse(JSONRPCErrorResponse.make(rawID: rawID, code: JSONRPCErrorResponse.internalError, message: "the session ended"), headers: [:])
        }
        if first.final {
            finish()
            return Self.jsonResponse(first.bytes, headers: [:])
        }
        return Self.eventStream(first: first.bytes, request: request, keepAlive: keepAliveInterval, onEnd: finish, next: next)
    }
}

extension StdioBridge {
    /// `subscriptions/listen` for a translated server (a stdio child or a session-based HTTP
    /// upstream): acknowledged with the subset it can announce (its `listChanged` `capabilities`,
    /// and `resourceSubscriptions` it accepted when it declares `resources.subscribe`), then those
    /// notifications as they come through `hub`, until the client closes the stream (or the
    /// server's notification stream ends: then a completion result closes it).
    static func listen(_ message: JSONRPCMessage, rawID: String?, capabilities: [String: Any], hub: NotificationHub, request: Request, keepAlive: Duration) async -> Response {
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
        let ack = (try? JSONSerialization.data(withJSONObject: ["jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": ackParams])) ?? Data()
        let iterator = IteratorBox(notifications.makeAsyncIterator())
        let completion = ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(subscriptionID),\"result\":{\"resultType\":\"complete\"}}")
        return Self.eventStream(first: ByteBuffer(bytes: ack), request: request, keepAlive: keepAlive, onEnd: { hub.stop(listenerID) }) {
            guard let notification = await iterator.next() else { return nil }
            // nil from the hub: the server's stream ended; the subscription ends gracefully.
            return notification.map { ($0, false) } ?? (completion, true)
        }
    }
}

extension StdioBridge {

    /// A session-based client's request to a 2026-07-28 child: the child's interim messages
    /// (progress, logs) reach the client as they come; when the child answers with an
    /// `InputRequiredResult`, its asks go to the client as server→client requests on this
    /// response's SSE stream, the client's answers come back in its session, and the request is
    /// retried with `inputResponses` (and `requestState`) until the child completes it.
    func relayingInputRequired(_ message: JSONRPCMessage, request: Request, session: LegacySession, sessionID: String, stamp: String, timeout: Duration?) async -> Response {
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
            return Self.jsonResponse(JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "the session ended"), headers: [:])
        }
        return await Self.relayBridged(original: message, feed: feed, sessionKey: sessionID, asks: bridgeAsks, canAsk: true, exchange: exchange) {
            for subscription in reading.withLock({ $0 }) { session.readerStopped(subscription) }
        }
    }

    /// Answers a session-based client's request to a 2026-07-28 server: a lone final answer as
    /// JSON; otherwise an SSE stream that carries the server's interim messages live and, when the
    /// server returns an `InputRequiredResult` and the client can answer (`canAsk`), its asks as
    /// server→client requests, the client's answers collected through `asks` and the request
    /// retried through `exchange` until the server completes it (≤ 10 rounds). An ask the client
    /// cannot answer ends in a precise error.
    static func relayBridged(
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

}

extension StdioBridge {
    /// An SSE response to a 2026-07-28 client: `first`, then each event `next` yields until it
    /// says final (or ends), with a keep-alive comment whenever the stream has been quiet for
    /// `keepAlive`; stops at once when the client goes away, and calls `onEnd` either way.
    static func eventStream(
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
            try await request.body.consumeWithCancellationOnInboundClose { _ in
                for await event in events {
                    try await writer.write(event ?? ByteBuffer(string: ": keep-alive\n\n"))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: eventStreamHeaders, body: body)
    }

    /// The final message of a stream the gateway reads itself (its own initialize or discover, a
    /// relayed retry); nil when the stream ended without one.
    static func finalAnswer(of subscription: LegacySession.Subscription, session: LegacySession) async -> ByteBuffer? {
        defer { session.readerStopped(subscription) }
        for await item in subscription.items {
            guard case .message(_, let bytes, let isFinal) = item else { return nil }
            if isFinal { return bytes }
        }
        return nil
    }
}


extension NotificationHub {
    /// A hub fed by a stdio child's standalone stream (ended at once when it cannot be attached).
    static func following(_ session: LegacySession, subscriber: ResourceSubscriber? = nil) -> NotificationHub {
        guard let subscription = try? session.attachStream(lastEventID: nil) else { return NotificationHub(ended: ()) }
        let items = IteratorBox(subscription.items.makeAsyncIterator())
        return NotificationHub(following: {
            guard case .message(_, let bytes, _)? = await items.next() else { return nil }
            return bytes
        }, subscriber: subscriber)
    }
}
