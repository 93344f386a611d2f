import Foundation
import GatewayConfig
import GatewayStdio
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
import NIOCore
import Synchronization

/// 2026-07-28 (stateless) requests on a stdio route. Each request stands alone: no session id, the
/// client's version, capabilities and identity ride in `_meta` and in `Mcp-*` headers, which must
/// agree with the body. The gateway serves them from children it initialized itself as a
/// session-based client — which every child understands, legacy-only or dual-era — kept per
/// identity (a child is never shared between users) and reused across requests, with JSON-RPC ids
/// remapped so many clients' requests can share one child.
///
/// Built so far: header validation (-32020 HeaderMismatch, -32022 unsupported version), GET/DELETE
/// → 405, `server/discover` answered from the child's InitializeResult, requests forwarded without
/// the modern `_meta` keys, `resultType: "complete"` added to results, progress relayed on SSE,
/// closing the stream cancels the request in the child.
/// Not yet: server→client asks as Multi Round-Trip Requests, `subscriptions/listen`, modern-only
/// children, HTTP upstreams, a pool of several children per identity.
enum ModernProtocol {
    static let versions = ["2026-07-28"]
    static let metaPrefix = "io.modelcontextprotocol/"
    static let headerMismatch = -32020
    static let unsupportedVersion = -32022
    static let methodHeader = HTTPField.Name("Mcp-Method")!
    static let nameHeader = HTTPField.Name("Mcp-Name")!

    /// Whether a request is for the modern era: its MCP-Protocol-Version is not a 2025 (or earlier)
    /// session-based version.
    static func isModern(_ request: Request) -> Bool {
        guard let version = request.headers[StdioBridge.versionHeader] else { return false }
        return !StdioBridge.supportedVersions.contains(version)
    }

    /// `=?base64?…?=` header values decode to their UTF-8 text; others are taken as they are.
    static func decodeHeader(_ value: String) -> String? {
        // The common case: a plain value, nothing to trim or decode.
        if !value.hasPrefix("=?"), value.first != " ", value.last != " " { return value }
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("=?base64?"), trimmed.hasSuffix("?=") else { return trimmed }
        let encoded = String(trimmed.dropFirst("=?base64?".count).dropLast(2))
        guard let data = Data(base64Encoded: encoded) else { return nil }
        return String(data: data, encoding: .utf8)
    }

    static func error(_ status: HTTPResponse.Status, code: Int, message: String, rawID: String?, dataJSON: String? = nil) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: JSONRPCErrorResponse.make(rawID: rawID, code: code, message: message, dataJSON: dataJSON))
        )
    }
}

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
        service: StdioServiceConfiguration, key: String, owner: String, create: @escaping @Sendable (_ warm: Bool) async throws -> Entry
    ) async throws -> (entry: Entry, changed: Bool) {
        while true {
            let decision: Decision = state.withLock { state in
                var pool = state.pools[key] ?? Pool()
                pool.entries.removeAll { if case .closed = $0.session.phase { true } else { false } }
                defer { state.pools[key] = pool }
                let best = pool.entries.min { $0.session.pendingCount < $1.session.pendingCount }
                if let best, best.session.pendingCount == 0 || pool.entries.count + pool.starting.count >= service.pool.max {
                    return .use(best)
                }
                if pool.entries.count + pool.starting.count < service.pool.max {
                    var warm = state.warm[service.name] ?? []
                    warm.removeAll { if case .closed = $0.session.phase { true } else { false } }
                    if let taken = warm.popLast() {
                        state.warm[service.name] = warm
                        pool.entries.append(taken)
                        return .assign(taken)
                    }
                    state.warm[service.name] = warm
                    return .create
                }
                return pool.starting.first.map(Decision.wait) ?? .create
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

    /// Keeps `pool.min` warm children for the service (started in the background).
    func keepWarm(service: StdioServiceConfiguration, create: @escaping @Sendable (_ warm: Bool) async throws -> Entry) {
        guard service.pool.min > 0, !service.passIdentity else { return }
        let missing: Int = state.withLock { state in
            var warm = state.warm[service.name] ?? []
            warm.removeAll { if case .closed = $0.session.phase { true } else { false } }
            state.warm[service.name] = warm
            // Shared children count toward the minimum once assigned; per-user ones do not (each
            // new identity should find a warm child).
            let assigned = service.isolation == .shared ? (state.pools["\(service.name)\u{0}shared"]?.entries.count ?? 0) : 0
            let missing = service.pool.min - warm.count - assigned - state.warming[service.name, default: 0]
            if missing > 0 { state.warming[service.name, default: 0] += missing }
            return max(0, missing)
        }
        for _ in 0..<missing {
            Task {
                let entry = try? await create(true)
                state.withLock { state in
                    state.warming[service.name, default: 1] -= 1
                    if let entry { state.warm[service.name, default: []].append(entry) }
                }
            }
        }
    }
}

/// A JSON value that can cross concurrency domains (decoded by JSONSerialization).
struct SendableJSON: @unchecked Sendable {
    let value: Any
}

extension StdioBridge {
    func handleModern(_ request: Request, context: GatewayRequestContext, route: CompiledRoute, manager: StdioSessionManager, verified: VerifiedCaller?) async throws(GatewayError) -> Response {
        guard request.method == .post else {
            var response = ModernProtocol.error(.methodNotAllowed, code: JSONRPCErrorResponse.invalidRequest, message: "\(request.method.rawValue) is not part of protocol version 2026-07-28: send each request as a POST", rawID: nil)
            response.headers[.allow] = "POST"
            return response
        }
        var request = request
        let body = try await RequestBodyReader.read(&request, limit: route.maxRequestBodyBytes)
        // Read in place with the scanner: no decoding of the body on the hot path.
        let message: JSONRPCMessage
        do {
            message = try JSONRPCMessage(parsing: body)
        } catch {
            if case .invalidJSON = error {
                return ModernProtocol.error(.badRequest, code: JSONRPCErrorResponse.parseError, message: "Parse error: the body must be one JSON-RPC message", rawID: nil)
            }
            return ModernProtocol.error(.badRequest, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: the body must be a JSON-RPC request or notification", rawID: nil)
        }
        let rawID = message.rawID
        guard let method = message.method, message.kind == .request || message.kind == .notification else {
            return ModernProtocol.error(.badRequest, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: the body must be a JSON-RPC request or notification", rawID: rawID)
        }
        let headerVersion = request.headers[StdioBridge.versionHeader] ?? ""
        guard ModernProtocol.versions.contains(headerVersion) else {
            let supported = (ModernProtocol.versions + StdioBridge.supportedVersions.reversed()).map { "\"\($0)\"" }.joined(separator: ",")
            return ModernProtocol.error(.badRequest, code: ModernProtocol.unsupportedVersion, message: "Unsupported protocol version \(headerVersion)", rawID: rawID,
                                        dataJSON: "{\"supported\":[\(supported)]}")
        }
        // The headers mirror the body; intermediaries route on them, so a mismatch is refused.
        var mismatch: String?
        let bodyVersion = message.string(at: ["params", "_meta", ModernProtocol.metaPrefix + "protocolVersion"])
        if let bodyVersion, bodyVersion != headerVersion {
            mismatch = "MCP-Protocol-Version \(headerVersion) differs from _meta protocolVersion \(bodyVersion)"
        } else if bodyVersion == nil, message.isRequest {
            mismatch = "_meta[\"io.modelcontextprotocol/protocolVersion\"] is required"
        } else if request.headers[ModernProtocol.methodHeader].flatMap(ModernProtocol.decodeHeader) != method {
            mismatch = "Mcp-Method must equal the body's method \(method)"
        } else if ["tools/call", "prompts/get", "resources/read"].contains(method) {
            let expected = message.string(at: ["params", method == "resources/read" ? "uri" : "name"])
            if request.headers[ModernProtocol.nameHeader].flatMap(ModernProtocol.decodeHeader) != expected {
                mismatch = "Mcp-Name must equal the body's \(method == "resources/read" ? "params.uri" : "params.name")"
            }
        }
        if let mismatch {
            return ModernProtocol.error(.badRequest, code: ModernProtocol.headerMismatch, message: "Header mismatch: \(mismatch)", rawID: rawID)
        }

        let service = manager.service
        let identityKey = service.isolation == .shared ? "shared" : (verified?.claims.sub ?? "anonymous")
        let identity = service.passIdentity ? verified.map(Self.identityEnvironment) : nil
        let owner = "modern:\(identityKey)"
        let entry: ModernSessions.Entry
        do {
            let (found, changed) = try await modernSessions.entry(service: service, key: "\(service.name)\u{0}\(identityKey)", owner: owner) { warm in
                try await Self.startModernSession(manager: manager, owner: owner, identity: identity, warm: warm)
            }
            entry = found
            if changed { keepWarm(manager) }
        } catch let error as GatewayError {
            throw error
        } catch {
            throw .stdioStartFailed(service: service.name, detail: "\(error)")
        }

        if method == "server/discover" {
            return Self.jsonResponse(Self.discoverResponse(rawID: rawID, initializeResult: entry.initializeResult, modern: entry.modern), headers: [:])
        }
        if entry.modern {
            // A modern child: the request as the client sent it, the answers as the child wrote them.
            return try await forward(message, request: request, context: context, entry: entry, service: service, rawID: rawID, transform: nil)
        }
        if method == "subscriptions/listen", let hub = entry.hub {
            return listen(message, rawID: rawID, entry: entry, hub: hub, request: request, keepAlive: service.sseKeepAlive)
        }
        // A retry carrying `requestState`: the answers go to the child's waiting asks, and the
        // original request's outcome answers this one.
        if let token = message.string(at: ["params", "requestState"]) {
            guard let parked = inputRequired.take(token: token, owner: owner) else {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.invalidParams, message: "requestState is unknown, expired or was issued to another user; send the request again without it", rawID: rawID)
            }
            var answers: [JSONRPCMessage] = []
            for (key, childID) in parked.asks {
                let value = message.value(at: ["params", "inputResponses", key])
                let line = value.map { "{\"jsonrpc\":\"2.0\",\"id\":\(childID),\"result\":\($0)}" }
                    ?? "{\"jsonrpc\":\"2.0\",\"id\":\(childID),\"error\":{\"code\":-32600,\"message\":\"the client sent no response for this request\"}}"
                if let answer = try? JSONRPCMessage(parsing: line) { answers.append(answer) }
            }
            do { try parked.session.sendNotifications(answers) } catch {
                return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
            }
            return await driveTranslated(parked.session, parked.subscription, parked.iterator, request: request, context: context, rawID: rawID, method: method,
                                         owner: owner, capabilities: message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"]),
                                         keepAliveInterval: service.sseKeepAlive)
        }
        // The child speaks the session-based protocol: it gets the request without the modern
        // `_meta` keys (spliced out; rewritten only when `_meta` also holds other keys).
        let capabilities = message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"])
        guard let message = message.removingParamsMeta(ifOnlyKeysWithPrefix: ModernProtocol.metaPrefix) ?? Self.withoutModernMeta(message) else {
            return ModernProtocol.error(.badRequest, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request", rawID: rawID)
        }
        guard message.isRequest else {
            do { try entry.session.sendNotifications([message]) } catch {}
            return Response(status: .accepted)
        }
        let subscription: LegacySession.Subscription
        do { subscription = try entry.session.sendRequests([message], timeout: service.requestTimeout) } catch {
            return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
        }
        return await driveTranslated(entry.session, subscription, IteratorBox(subscription.items.makeAsyncIterator()), request: request, context: context,
                                     rawID: rawID, method: method, owner: owner, capabilities: capabilities, keepAliveInterval: service.sseKeepAlive)
    }

    private func forward(
        _ message: JSONRPCMessage, request: Request, context: GatewayRequestContext, entry: ModernSessions.Entry, service: StdioServiceConfiguration,
        rawID: String?, transform: (@Sendable (ByteBuffer, Bool) -> ByteBuffer)?
    ) async throws(GatewayError) -> Response {
        do {
            guard message.isRequest else {
                try entry.session.sendNotifications([message])
                return Response(status: .accepted)
            }
            let subscription = try entry.session.sendRequests([message], timeout: service.requestTimeout)
            // Closing the response stream cancels the request: the child hears of it at once.
            let session = entry.session
            let watcher = InboundCloseWatcher.watcher(for: context.channel)
            let token = watcher?.onClose { session.cancelRequests(of: subscription, reason: "the client closed the response stream") }
            let onEnd: @Sendable () -> Void = {
                watcher?.cancel(token)
                session.cancelRequests(of: subscription, reason: "the client closed the response stream")
            }
            return await respond(to: request, session: session, subscription: subscription, single: true, extraHeaders: [:], transform: transform, onEnd: onEnd)
        } catch {
            return ModernProtocol.error(.ok, code: JSONRPCErrorResponse.internalError, message: "the MCP server's process ended; retry the request", rawID: rawID)
        }
    }

    /// The child initialized by the gateway itself, as a session-based client without
    /// capabilities (server→client asks are not translated yet, so none are offered).
    /// Tops the service's warm children up to `pool.min`.
    func keepWarm(_ manager: StdioSessionManager) {
        modernSessions.keepWarm(service: manager.service) { warm in
            try await Self.startModernSession(manager: manager, owner: "modern:warm", identity: nil, warm: warm)
        }
    }

    static let discoverProbe = #"{"jsonrpc":"2.0","id":"mcp-gateway-discover","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp-gateway","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#
    /// Offers elicitation and sampling: a child's asks become Multi Round-Trip Requests to the
    /// 2026-07-28 client (refused by the gateway when that client did not declare the capability).
    static let initializeRequest = #"{"jsonrpc":"2.0","id":"mcp-gateway-init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{},"sampling":{}},"clientInfo":{"name":"mcp-gateway","version":"0.1.0"}}}"#

    /// Starts a child and learns its era (2026-07-28 stdio rule): `server/discover` first; a
    /// DiscoverResult naming 2026-07-28 means modern, anything else (an error, another version)
    /// means it is initialized as a session-based server on the same process.
    static func startModernSession(manager: StdioSessionManager, owner: String, identity: [String: String]?, warm: Bool) async throws -> ModernSessions.Entry {
        let (session, subscription) = try await manager.beginInitialize(try JSONRPCMessage(parsing: discoverProbe), identity: identity)
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
        let hub = NotificationHub(session: session)
        try session.sendNotifications([try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)])
        return ModernSessions.Entry(session: session, modern: false, initializeResult: result.mapValues(SendableJSON.init), hub: hub)
    }

    /// The response a stream ends with, decoded (nil when the stream ended without one).
    private static func finalMessage(_ subscription: LegacySession.Subscription, session: LegacySession) async -> [String: Any]? {
        var final: ByteBuffer?
        for await item in subscription.items {
            guard case .message(_, let bytes, let isFinal) = item else { break }
            if isFinal {
                final = bytes
                break
            }
        }
        session.readerStopped(subscription)
        return final.flatMap { (try? JSONSerialization.jsonObject(with: Data(buffer: $0))) as? [String: Any] }
    }

    /// Rewrites `params._meta` without the modern keys (when it also holds others, e.g. a progress token).
    static func withoutModernMeta(_ message: JSONRPCMessage) -> JSONRPCMessage? {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(buffer: message.bytes))) as? [String: Any] else { return nil }
        var params = object["params"] as? [String: Any] ?? [:]
        let meta = (params["_meta"] as? [String: Any] ?? [:]).filter { !$0.key.hasPrefix(ModernProtocol.metaPrefix) }
        params["_meta"] = meta.isEmpty ? nil : meta
        object["params"] = params
        guard let data = try? JSONSerialization.data(withJSONObject: object) else { return nil }
        return try? JSONRPCMessage(parsing: ByteBuffer(bytes: data))
    }

    static func discoverResponse(rawID: String?, initializeResult: [String: SendableJSON], modern: Bool) -> ByteBuffer {
        if modern {
            // The child's own DiscoverResult, remembered from the probe.
            let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: initializeResult.mapValues(\.value))) ?? Data("{}".utf8), as: UTF8.self)
            return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":\(resultJSON)}")
        }
        var result: [String: Any] = [
            "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
            "supportedVersions": ModernProtocol.versions,
            "capabilities": initializeResult["capabilities"]?.value ?? [String: Any](),
        ]
        if let serverInfo = initializeResult["serverInfo"]?.value {
            result["_meta"] = [ModernProtocol.metaPrefix + "serverInfo": serverInfo]
        }
        if let instructions = initializeResult["instructions"]?.value { result["instructions"] = instructions }
        let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: result)) ?? Data("{}".utf8), as: UTF8.self)
        return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":\(resultJSON)}")
    }

    /// Results whose 2026-07-28 types are cacheable and so carry `ttlMs` and `cacheScope`.
    static let cacheableMethods: Set<String> = ["tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"]

    /// A result of the session-based child, as 2026-07-28 spells it: `resultType: "complete"`, and
    /// for cacheable results `ttlMs: 0` (a legacy child announces changes by notification, so
    /// nothing is promised fresh) with `cacheScope: "private"` (children are per user).
    static func completeResult(for method: String) -> @Sendable (ByteBuffer, Bool) -> ByteBuffer {
        let cacheable = cacheableMethods.contains(method)
        return { bytes, isFinal in
            guard isFinal, let message = try? JSONRPCMessage(parsing: bytes), message.kind == .response else { return bytes }
            var members: [String] = []
            if !message.resultHasMember("resultType") { members.append(#""resultType":"complete""#) }
            if cacheable {
                if !message.resultHasMember("ttlMs") { members.append(#""ttlMs":0"#) }
                if !message.resultHasMember("cacheScope") { members.append(#""cacheScope":"private""#) }
            }
            guard !members.isEmpty else { return bytes }
            return message.insertingIntoResult(members.joined(separator: ",")) ?? bytes
        }
    }
}

extension StdioBridge {
    /// A session-based client's `initialize` to a 2026-07-28-only child: answered by the gateway
    /// from the child's `server/discover`; the session then stamps `_meta` on every request.
    func initializeForModernChild(_ message: JSONRPCMessage, session: LegacySession, manager: StdioSessionManager, caller: String?) async throws(GatewayError) -> Response {
        let requested = message.string(at: ["params", "protocolVersion"]) ?? "2025-11-25"
        let version = Self.supportedVersions.contains(requested) ? requested : Self.supportedVersions[Self.supportedVersions.count - 1]
        let sessionID = manager.activate(session, protocolVersion: version, owner: caller)
        let discoverResult: [String: Any]
        do {
            let probe = try session.sendRequests([try JSONRPCMessage(parsing: Self.discoverProbe)], timeout: manager.service.startTimeout)
            var final: ByteBuffer?
            for await item in probe.items {
                guard case .message(_, let bytes, let isFinal) = item else { break }
                if isFinal { final = bytes; break }
            }
            session.readerStopped(probe)
            guard let final, let object = (try? JSONSerialization.jsonObject(with: Data(buffer: final))) as? [String: Any],
                  let result = object["result"] as? [String: Any]
            else { throw GatewayError.stdioStartFailed(service: manager.service.name, detail: "the MCP server refused initialize and server/discover") }
            discoverResult = result
        } catch {
            await manager.end(sessionID: sessionID, reason: "neither initialize nor server/discover succeeded")
            if let gatewayError = error as? GatewayError { throw gatewayError }
            throw .stdioStartFailed(service: manager.service.name, detail: "\(error)")
        }
        var meta: [String: Any] = [ModernProtocol.metaPrefix + "protocolVersion": ModernProtocol.versions[0]]
        meta[ModernProtocol.metaPrefix + "clientInfo"] = (try? JSONSerialization.jsonObject(with: Data((message.value(at: ["params", "clientInfo"]) ?? "{}").utf8)))
        meta[ModernProtocol.metaPrefix + "clientCapabilities"] = (try? JSONSerialization.jsonObject(with: Data((message.value(at: ["params", "capabilities"]) ?? "{}").utf8)))
        if let data = try? JSONSerialization.data(withJSONObject: meta) {
            session.modernMeta = String(decoding: data, as: UTF8.self)
        }
        var result: [String: Any] = [
            "protocolVersion": version,
            "capabilities": discoverResult["capabilities"] ?? [String: Any](),
            "serverInfo": ((discoverResult["_meta"] as? [String: Any])?[ModernProtocol.metaPrefix + "serverInfo"]) ?? ["name": manager.service.name, "version": "unknown"],
        ]
        if let instructions = discoverResult["instructions"] { result["instructions"] = instructions }
        let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: result)) ?? Data("{}".utf8), as: UTF8.self)
        let body = ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(message.rawID ?? "null"),\"result\":\(resultJSON)}")
        return Self.jsonResponse(body, headers: [Self.sessionHeader: sessionID])
    }

    /// An `InputRequiredResult` (2026-07-28) turned into a JSON-RPC error for a session-based
    /// client; anything else unchanged.
    static func refusingInputRequired(_ bytes: ByteBuffer) -> ByteBuffer {
        guard let message = try? JSONRPCMessage(parsing: bytes), message.isResponse,
              message.string(at: ["result", "resultType"]) == "input_required"
        else { return bytes }
        let asks = (try? JSONScannerKeys.keys(of: message, at: ["result", "inputRequests"])) ?? []
        let methods = asks.compactMap { message.string(at: ["result", "inputRequests", $0, "method"]) }
        let what = methods.isEmpty ? "more input" : methods.joined(separator: ", ")
        return JSONRPCErrorResponse.make(
            rawID: message.rawID, code: JSONRPCErrorResponse.internalError,
            message: "the MCP server asked for \(what), which this gateway cannot yet relay from a 2026-07-28 server to a session-based client",
            dataJSON: "{\"reason\":\"input_required_not_relayed\"}"
        )
    }

    /// The message with `meta` (a JSON object of `_meta` members) merged into `params._meta`.
    static func stamping(_ message: JSONRPCMessage, meta: String) -> JSONRPCMessage {
        guard message.isRequest, var object = (try? JSONSerialization.jsonObject(with: Data(buffer: message.bytes))) as? [String: Any],
              let stamp = (try? JSONSerialization.jsonObject(with: Data(meta.utf8))) as? [String: Any]
        else { return message }
        var params = object["params"] as? [String: Any] ?? [:]
        var existing = params["_meta"] as? [String: Any] ?? [:]
        existing.merge(stamp) { current, _ in current }
        params["_meta"] = existing
        object["params"] = params
        guard let data = try? JSONSerialization.data(withJSONObject: object), let stamped = try? JSONRPCMessage(parsing: ByteBuffer(bytes: data)) else { return message }
        return stamped
    }
}

/// Asks of session-based children waiting for a 2026-07-28 client's retry (Multi Round-Trip
/// Requests): the `requestState` handed to the client is an unguessable handle, bound to the
/// identity it was issued to and valid for a few minutes; the original request keeps running in
/// the child meanwhile.
final class InputRequiredStore: Sendable {
    struct Parked: Sendable {
        let session: LegacySession
        let subscription: LegacySession.Subscription
        let iterator: IteratorBox
        /// Input-request key → the child's request id (raw JSON).
        let asks: [(String, String)]
        let owner: String
        let expires: ContinuousClock.Instant
    }

    static let lifetime: Duration = .seconds(300)
    private let parked = Mutex<[String: Parked]>([:])

    func park(_ value: Parked) -> String {
        var generator = SystemRandomNumberGenerator()
        let token = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        let now = ContinuousClock.now
        parked.withLock { parked in
            parked = parked.filter { $0.value.expires > now }
            parked[token] = value
        }
        return token
    }

    func take(token: String, owner: String) -> Parked? {
        parked.withLock { parked in
            guard let value = parked[token], value.owner == owner, value.expires > .now else { return nil }
            parked[token] = nil
            return value
        }
    }
}

extension StdioBridge {
    static let askCapabilities = ["elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"]

    /// Relays a translated child's answer to a 2026-07-28 client: progress and other notifications
    /// as SSE events while they come; the final result (with `resultType`); or, when the child asks
    /// the client something, an `InputRequiredResult` whose `requestState` parks the request.
    func driveTranslated(
        _ session: LegacySession, _ subscription: LegacySession.Subscription, _ iterator: IteratorBox, request: Request, context: GatewayRequestContext,
        rawID: String?, method: String, owner: String, capabilities: String?, keepAliveInterval: Duration = .seconds(15)
    ) async -> Response {
        let transform = Self.completeResult(for: method)
        let declared = Set(((try? JSONSerialization.jsonObject(with: Data((capabilities ?? "{}").utf8))) as? [String: Any] ?? [:]).keys)
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
                guard let capability = Self.askCapabilities[askMethod], declared.contains(capability) else {
                    // The client cannot answer this kind of ask: the child hears so at once.
                    let refusal = "{\"jsonrpc\":\"2.0\",\"id\":\(childID),\"error\":{\"code\":-32601,\"message\":\"the client did not declare support for \(askMethod)\"}}"
                    try? session.sendNotifications([try JSONRPCMessage(parsing: refusal)])
                    continue
                }
                parkedFlag.set()
                let handle = store.park(.init(session: session, subscription: subscription, iterator: iterator, asks: [("input-1", childID)], owner: owner,
                                              expires: .now + InputRequiredStore.lifetime))
                let params = ask.value(at: ["params"]) ?? "{}"
                let result = "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":{\"resultType\":\"input_required\",\"inputRequests\":{\"input-1\":{\"method\":\"\(askMethod)\",\"params\":\(params)}},\"requestState\":\"\(handle)\"}}"
                return (ByteBuffer(string: result), true)
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
        let keepAlive = keepAliveInterval
        let body = ResponseBody { writer in
            defer { finish() }
            try await writer.write(SSEEncoding.event(id: nil, data: first.bytes))
            // One producer feeds the messages and, when the stream is quiet, keep-alive comments.
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
        return Response(status: .ok, headers: Self.eventStreamHeaders, body: body)
    }
}

/// Set once a request is parked for a Multi Round-Trip retry: it must then outlive its response.
final class ParkedFlag: Sendable {
    private let state = Mutex(false)
    var value: Bool { state.withLock { $0 } }
    func set() { state.withLock { $0 = true } }
}

/// The notifications a translated child sends on its own (list changes), fanned out to the
/// `subscriptions/listen` streams that asked for them. Reads the session's standalone stream.
final class NotificationHub: Sendable {
    private struct Listener {
        let methods: Set<String>
        let subscriptionID: String
        let continuation: AsyncStream<ByteBuffer?>.Continuation
    }

    private let listeners = Mutex<(next: Int, all: [Int: Listener], ended: Bool)>((0, [:], false))

    init(session: LegacySession) {
        guard let subscription = try? session.attachStream(lastEventID: nil) else {
            listeners.withLock { $0.ended = true }
            return
        }
        Task { [weak self] in
            for await item in subscription.items {
                guard case .message(_, let bytes, _) = item else { break }
                self?.deliver(bytes)
            }
            self?.end()
        }
    }

    /// A stream of notifications (raw JSON, stamped with the subscription id); nil marks the end.
    func listen(methods: Set<String>, subscriptionID: String) -> (Int, AsyncStream<ByteBuffer?>) {
        let (stream, continuation) = AsyncStream<ByteBuffer?>.makeStream()
        let id: Int = listeners.withLock { state in
            state.next += 1
            if state.ended {
                continuation.yield(nil)
                continuation.finish()
            } else {
                state.all[state.next] = Listener(methods: methods, subscriptionID: subscriptionID, continuation: continuation)
            }
            return state.next
        }
        return (id, stream)
    }

    func stop(_ id: Int) {
        let listener = listeners.withLock { $0.all.removeValue(forKey: id) }
        listener?.continuation.finish()
    }

    private func deliver(_ bytes: ByteBuffer) {
        guard let message = try? JSONRPCMessage(parsing: bytes), let method = message.method, !message.isRequest else { return }
        let targets = listeners.withLock { state in state.all.values.filter { $0.methods.contains(method) } }
        for listener in targets {
            listener.continuation.yield(Self.stamped(message, subscriptionID: listener.subscriptionID))
        }
    }

    private func end() {
        let all = listeners.withLock { state -> [Listener] in
            state.ended = true
            defer { state.all.removeAll() }
            return Array(state.all.values)
        }
        for listener in all {
            listener.continuation.yield(nil)
            listener.continuation.finish()
        }
    }

    /// The notification with `_meta["io.modelcontextprotocol/subscriptionId"]` set.
    static func stamped(_ message: JSONRPCMessage, subscriptionID: String) -> ByteBuffer {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(buffer: message.bytes))) as? [String: Any],
              let id = try? JSONSerialization.jsonObject(with: Data(subscriptionID.utf8), options: [.fragmentsAllowed])
        else { return message.bytes }
        var params = object["params"] as? [String: Any] ?? [:]
        var meta = params["_meta"] as? [String: Any] ?? [:]
        meta[ModernProtocol.metaPrefix + "subscriptionId"] = id
        params["_meta"] = meta
        object["params"] = params
        return ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: object)) ?? Data(buffer: message.bytes))
    }
}

extension StdioBridge {
    static let listChangedFilters = [
        ("toolsListChanged", "tools", "notifications/tools/list_changed"),
        ("promptsListChanged", "prompts", "notifications/prompts/list_changed"),
        ("resourcesListChanged", "resources", "notifications/resources/list_changed"),
    ]

    /// `subscriptions/listen` for a translated child: acknowledged with the subset the child can
    /// announce (its `listChanged` capabilities), then its list changes as they come, until the
    /// client closes the stream (or the child ends: then a completion result closes it).
    func listen(_ message: JSONRPCMessage, rawID: String?, entry: ModernSessions.Entry, hub: NotificationHub, request: Request, keepAlive: Duration) -> Response {
        let subscriptionID = rawID ?? "null"
        let capabilities = entry.initializeResult["capabilities"]?.value as? [String: Any] ?? [:]
        var acknowledged: [String: Any] = [:]
        var methods: Set<String> = []
        for (field, capability, method) in Self.listChangedFilters where message.value(at: ["params", "notifications", field]) == "true" {
            if (capabilities[capability] as? [String: Any])?["listChanged"] as? Bool == true {
                acknowledged[field] = true
                methods.insert(method)
            }
        }
        let ackParams: [String: Any] = ["_meta": [ModernProtocol.metaPrefix + "subscriptionId": (try? JSONSerialization.jsonObject(with: Data(subscriptionID.utf8), options: [.fragmentsAllowed])) ?? NSNull()],
                                        "notifications": acknowledged]
        let ack = (try? JSONSerialization.data(withJSONObject: ["jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": ackParams])) ?? Data()
        let (listenerID, notifications) = hub.listen(methods: methods, subscriptionID: subscriptionID)
        let body = ResponseBody { writer in
            defer { hub.stop(listenerID) }
            try await writer.write(SSEEncoding.event(id: nil, data: ByteBuffer(bytes: ack)))
            let (events, continuation) = AsyncStream<ByteBuffer?>.makeStream()
            let producer = Task {
                for await notification in notifications {
                    guard let notification else {
                        // The child went away: end the subscription gracefully.
                        continuation.yield(SSEEncoding.event(id: nil, data: ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(subscriptionID),\"result\":{\"resultType\":\"complete\"}}")))
                        break
                    }
                    continuation.yield(SSEEncoding.event(id: nil, data: notification))
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
        return Response(status: .ok, headers: Self.eventStreamHeaders, body: body)
    }
}

/// Object keys at a path of a message (for small lookups off the hot path).
enum JSONScannerKeys {
    static func keys(of message: JSONRPCMessage, at path: [String]) throws -> [String] {
        guard let raw = message.value(at: path), let object = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] else { return [] }
        return object.keys.sorted()
    }
}

/// Asks relayed to session-based clients on behalf of 2026-07-28 children, waiting for the
/// client's answer (a JSON-RPC response POSTed in its session).
final class BridgeAsks: Sendable {
    private let waiting = Mutex<[String: AsyncStream<ByteBuffer?>.Continuation]>([:])

    /// Registers interest in the answer to `askID` before the ask is sent (so a fast answer is
    /// never missed); the returned stream yields the answer, or nil after `timeout`.
    func expect(session: String, askID: String, timeout: Duration) -> AsyncStream<ByteBuffer?> {
        let key = "\(session)\u{0}\(askID)"
        let (stream, continuation) = AsyncStream<ByteBuffer?>.makeStream()
        waiting.withLock { $0[key] = continuation }
        Task { [weak self] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            self?.finish(key, with: nil)
        }
        return stream
    }

    /// True when `answer` was the response an ask waited for (then it is consumed here).
    func resume(session: String, answer: JSONRPCMessage) -> Bool {
        guard answer.isResponse, let id = answer.rawID else { return false }
        return finish("\(session)\u{0}\(id)", with: answer.bytes)
    }

    @discardableResult
    private func finish(_ key: String, with value: ByteBuffer?) -> Bool {
        guard let continuation = waiting.withLock({ $0.removeValue(forKey: key) }) else { return false }
        continuation.yield(value)
        continuation.finish()
        return true
    }
}

extension StdioBridge {
    static func declares(stamp: String, anyOf capabilities: [String]) -> Bool {
        guard let meta = (try? JSONSerialization.jsonObject(with: Data(stamp.utf8))) as? [String: Any],
              let declared = meta[ModernProtocol.metaPrefix + "clientCapabilities"] as? [String: Any]
        else { return false }
        return capabilities.contains { declared[$0] != nil }
    }

    /// A session-based client's request to a 2026-07-28 child: when the child answers with an
    /// `InputRequiredResult`, its asks go to the client as server→client requests on this
    /// response's SSE stream; the client's answers come back in its session, and the request is
    /// retried with `inputResponses` (and `requestState`) until the child completes it.
    func relayingInputRequired(_ message: JSONRPCMessage, request: Request, session: LegacySession, sessionID: String, stamp: String, timeout: Duration?) async -> Response {
        let asks = bridgeAsks
        // Sends the request (or a retry) and waits for the child's final answer.
        let exchange: @Sendable (JSONRPCMessage) async -> ByteBuffer? = { outgoing in
            guard let subscription = try? session.sendRequests([outgoing], timeout: timeout) else { return nil }
            var final: ByteBuffer?
            for await item in subscription.items {
                guard case .message(_, let bytes, let isFinal) = item else { break }
                if isFinal { final = bytes; break }
            }
            session.readerStopped(subscription)
            return final
        }
        guard let first = await exchange(message) else {
            return Self.jsonResponse(JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "the session ended"), headers: [:])
        }
        guard Self.isInputRequired(first) else { return Self.jsonResponse(first, headers: [:]) }
        return Self.relayAsks(first: first, original: message, sessionKey: sessionID, asks: asks, exchange: exchange)
    }

    /// Relays an `InputRequiredResult` to a session-based client as server→client requests on an
    /// SSE stream, collects its answers (`asks`), and retries `original` through `exchange` until
    /// the server completes it (≤ 10 rounds).
    static func relayAsks(
        first: ByteBuffer, original message: JSONRPCMessage, sessionKey sessionID: String, asks: BridgeAsks,
        exchange: @escaping @Sendable (JSONRPCMessage) async -> ByteBuffer?
    ) -> Response {
        let body = ResponseBody { writer in
            var answer = first
            var round = 0
            while Self.isInputRequired(answer), round < 10 {
                round += 1
                guard let result = (try? JSONRPCMessage(parsing: answer)), let requestsJSON = result.value(at: ["result", "inputRequests"]),
                      let inputRequests = (try? JSONSerialization.jsonObject(with: Data(requestsJSON.utf8))) as? [String: Any]
                else { break }
                var responses: [String: Any] = [:]
                for (key, value) in inputRequests.sorted(by: { $0.key < $1.key }) {
                    guard let ask = value as? [String: Any], let method = ask["method"] as? String else { continue }
                    let askID = "\"mcp-gateway-ask-\(round)-\(key.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "k")\""
                    let params = ask["params"].flatMap { try? JSONSerialization.data(withJSONObject: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? "{}"
                    let pending = asks.expect(session: sessionID, askID: askID, timeout: .seconds(300))
                    try await writer.write(SSEEncoding.event(id: nil, data: ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(askID),\"method\":\"\(method)\",\"params\":\(params)}")))
                    var received: ByteBuffer?
                    for await value in pending {
                        received = value
                        break
                    }
                    guard let reply = received,
                          let replyObject = (try? JSONSerialization.jsonObject(with: Data(buffer: reply))) as? [String: Any], let value = replyObject["result"]
                    else {
                        try await writer.write(SSEEncoding.event(id: nil, data: JSONRPCErrorResponse.make(
                            rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "the client did not answer the server's \(method)")))
                        try await writer.finish(nil)
                        return
                    }
                    responses[key] = value
                }
                // The retry: the same request, with the answers and the child's state.
                guard var object = (try? JSONSerialization.jsonObject(with: Data(buffer: message.bytes))) as? [String: Any] else { break }
                var params = object["params"] as? [String: Any] ?? [:]
                params["inputResponses"] = responses
                if let state = result.string(at: ["result", "requestState"]) { params["requestState"] = state } else { params["requestState"] = nil }
                object["params"] = params
                guard let data = try? JSONSerialization.data(withJSONObject: object), let retry = try? JSONRPCMessage(parsing: ByteBuffer(bytes: data)),
                      let next = await exchange(retry)
                else { break }
                answer = next
            }
            try await writer.write(SSEEncoding.event(id: nil, data: Self.refusingInputRequired(answer)))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: Self.eventStreamHeaders, body: body)
    }

    static func isInputRequired(_ bytes: ByteBuffer) -> Bool {
        (try? JSONRPCMessage(parsing: bytes))?.string(at: ["result", "resultType"]) == "input_required"
    }
}
