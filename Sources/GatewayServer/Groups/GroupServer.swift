import NIOFoundationEssentialsCompat
import Foundation
import GatewayAuth
import GatewayConfig
import Hummingbird
import HTTPTypes
import Logging
import MCPAggregation
import MCPMessages
import MCPTransport
import MCPTranslation
import NIOCore
import Synchronization

/// A group (`services.<s>.group`) served as one MCP server. The gateway speaks to its members in
/// 2026-07-28, each request standing alone, through the same era dispatch as any route (so a
/// session-based or stdio member is translated as usual), and to the client in the client's era:
/// a 2026-07-28 client's calls pass to the member and back as they are; a session-based client
/// gets a session of the gateway's own, whose calls are relayed with the member's progress and
/// asks (elicitation, sampling) as server→client messages on the call's stream. Such a session's
/// member requests carry its id as their `memberScope`, so the members' transports keep a child
/// or an upstream session per client session, opened at first use and ended with its DELETE.
final class GroupServer: Sendable {
    struct Session {
        let owner: SessionOwner
        /// The `_meta` stamped on the client's requests (its version, info, capabilities).
        let meta: String
    }

    /// How long a caller's merged lists are reused before the members are asked again.
    static let catalogueLifetime: Duration = .seconds(10)
    static let maxSessions = 10_000
    static let maxPages = 16

    let bindings: SessionBindings
    /// Where a group session this process does not hold is (another instance, or none).
    let locator: SessionLocator?
    let asks = BridgeAsks()
    let logger: Logger
    private let sessions = Mutex<[String: Session]>([:])
    /// Member requests running for a session's calls, by session and call id: what a
    /// `notifications/cancelled` ends.
    private let inFlight = Mutex<[String: [Int: @Sendable () -> Void]]>([:])
    private let nextInFlight = Atomic<Int>(0)
    /// Per group: members left out of the last lists, and names that clashed (for /readyz).
    private let health = Mutex<[String: (down: [String], clashes: [String])]>([:])
    private let catalogues = Mutex<[String: (catalogue: GroupCatalogue, until: ContinuousClock.Instant)]>([:])

    init(bindings: SessionBindings, locator: SessionLocator? = nil, logger: Logger) {
        self.bindings = bindings
        self.locator = locator
        self.logger = logger
    }

    /// The gateway's own `_meta` on the requests it makes for itself (lists, discovery).
    static let ownMeta = #"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp-gateway","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}"#

    func respond(_ request: Request, context: GatewayRequestContext, group: GroupRoute, members dispatch: EraDispatch) async throws(GatewayError) -> Response {
        guard let call = context.call, let route = context.route else { throw .pipelineOrder(stage: "GroupServer") }
        let serving = Serving(server: self, group: group, request: request, context: context, dispatch: dispatch, router: route.router.name)
        switch call.era {
        case .modern:
            let message = try ModernProtocol.validate(call, request: request)
            return try await serving.answer(message, session: nil)
        case .sessionBased:
            return try await sessionBased(serving, call: call, route: route)
        }
    }

    private func sessionBased(_ serving: Serving, call: MCPCall, route: CompiledRoute) async throws(GatewayError) -> Response {
        let owner = SessionOwner(route: route, caller: serving.context.caller)
        let request = serving.request
        if request.method == .post, let message = call.message, message.method == "initialize", message.isRequest {
            return try await initialize(serving, message: message, owner: owner)
        }
        guard let id = call.sessionID else { throw .sessionNotFound }
        do { try await bindings.check(id, owner: owner) } catch { throw GatewayError(error) }
        let session: Session
        if let local = sessions.withLock({ $0[id] }) {
            guard local.owner == owner else { throw .sessionNotFound }
            session = local
        } else {
            session = try await takeOver(id, owner: owner, atHopLimit: serving.context.atHopLimit, needsChild: request.method == .post && call.message?.isRequest != false)
        }
        switch request.method {
        case .delete:
            sessions.withLock { _ = $0.removeValue(forKey: id) }
            await bindings.unbind(id)
            // The members' sessions of this client session end with it.
            for member in serving.group.members {
                await serving.dispatch.endMemberScope(id, route: member.route, caller: serving.context.caller, logger: serving.context.logger)
            }
            return Response(status: .noContent)
        case .get:
            return Self.listChangeStream(serving)
        default:
            break
        }
        guard let message = call.message else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: a group takes one JSON-RPC message per POST")
        }
        if message.isResponse {
            _ = asks.resume(session: id, answer: message)
            return Response(status: .accepted)
        }
        guard message.isRequest else {
            // A cancellation ends the member's request for that call (its answer is not awaited).
            if message.method == "notifications/cancelled", let requestID = message.value(at: ["params", "requestId"]) {
                cancelInFlight(session: id, rawID: requestID)
            }
            return Response(status: .accepted)
        }
        var scoped = serving
        scoped.memberScope = id
        return try await scoped.answer(EraRewrite.stamping(message, meta: session.meta), session: (id, session))
    }

    /// A group session no live instance holds (another instance holding it gets the request
    /// forwarded instead): its state is the client's `_meta`, rebuilt from the recorded
    /// `initialize`; the members' own sessions start anew at their first request.
    private func takeOver(_ id: String, owner: SessionOwner, atHopLimit: Bool, needsChild: Bool) async throws(GatewayError) -> Session {
        guard let locator else { throw .sessionNotFound }
        let record = try await locator.orphan(id, owner: owner, atHopLimit: atHopLimit, needsChild: needsChild)
        guard record.kind == "group", let text = record.initialize, let message = try? JSONRPCMessage(parsing: ByteBuffer(string: text)) else { throw .sessionNotFound }
        let session = Session(owner: owner, meta: ModernProtocol.clientStamp(from: message))
        try await locator.adopt(id, record: record)
        remember(id, session)
        logger.warning("group session re-established on this instance: its previous gateway instance is gone; its members' sessions start anew", metadata: [
            "session": "\(MCPSessionID.logged(id))", "previousInstance": "\(record.instance ?? "released")",
        ])
        return session
    }

    private func remember(_ id: String, _ session: Session) {
        sessions.withLock { sessions in
            if sessions.count >= Self.maxSessions {
                for key in sessions.keys.prefix(Self.maxSessions / 10) { sessions[key] = nil }
            }
            sessions[id] = session
        }
    }

    private func initialize(_ serving: Serving, message: JSONRPCMessage, owner: SessionOwner) async throws(GatewayError) -> Response {
        if let elsewhere = await locator?.elsewhereForNewSession(atHopLimit: serving.context.atHopLimit) { throw elsewhere }
        var discovered = await serving.discoverMembers()
        if serving.group.passthrough, discovered.capabilities.isEmpty {
            // Not connected yet: what an MCP server behind a gateway usually offers; the requests
            // themselves lead the user to connect.
            discovered.capabilities = ["tools": ["listChanged": true], "prompts": ["listChanged": true], "resources": ["listChanged": true]]
        }
        let requested = message.string(at: ["params", "protocolVersion"]) ?? "2025-11-25"
        let result: [String: Any] = [
            "protocolVersion": MCPVersions.sessionBased.contains(requested) ? requested : MCPVersions.sessionBased[MCPVersions.sessionBased.count - 1],
            "capabilities": discovered.capabilities,
            "serverInfo": ["name": serving.group.configuration.name, "version": "mcp-gateway"],
        ]
        let sessionID = MCPSessionID.mint()
        let details = SessionDetails(service: serving.group.configuration.name, kind: "group", initialize: String(buffer: message.bytes), protocolVersion: result["protocolVersion"] as? String)
        do { try await bindings.bind(sessionID, to: owner, details: details) } catch { throw GatewayError(error) }
        remember(sessionID, Session(owner: owner, meta: ModernProtocol.clientStamp(from: message)))
        return MCPResponses.jsonResponse(Self.response(rawID: message.rawID, result: result), headers: [MCPHeaders.sessionID: sessionID])
    }

    /// A session's GET stream: the members' list changes (each member listened to in 2026-07-28),
    /// keep-alives, and the gateway's own `list_changed` after a reload, until the client leaves.
    static func listChangeStream(_ serving: Serving) -> Response {
        Response(status: .ok, headers: MCPResponses.eventStreamHeaders, body: serving.listChangeBody(first: ByteBuffer(string: ": group stream\n\n")) { method in
            SSEEncoding.event(id: nil, data: ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"\(method)\"}"))
        })
    }

    // MARK: catalogues

    func cachedCatalogue(_ key: String) -> GroupCatalogue? {
        let now = ContinuousClock.now
        return catalogues.withLock { cached in
            guard let entry = cached[key], entry.until > now else { return nil }
            return entry.catalogue
        }
    }

    func forgetCatalogue(_ key: String) {
        catalogues.withLock { _ = $0.removeValue(forKey: key) }
    }

    func remember(_ catalogue: GroupCatalogue, key: String) {
        let until = ContinuousClock.now + Self.catalogueLifetime
        catalogues.withLock { cached in
            if cached.count >= 10_000 { cached.removeAll() }
            cached[key] = (catalogue, until)
        }
    }

    /// Registers a member request of `session`'s call `rawID`; the returned function unregisters it.
    func trackInFlight(session: String, rawID: String, cancel: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let key = "\(session)\u{0}\(rawID)"
        let token = nextInFlight.wrappingAdd(1, ordering: .relaxed).newValue
        inFlight.withLock { $0[key, default: [:]][token] = cancel }
        return { [self] in
            inFlight.withLock { running in
                running[key]?[token] = nil
                if running[key]?.isEmpty ?? false { running[key] = nil }
            }
        }
    }

    func cancelInFlight(session: String, rawID: String) {
        let cancels = inFlight.withLock { $0.removeValue(forKey: "\(session)\u{0}\(rawID)") }
        for cancel in cancels?.values ?? [:].values { cancel() }
    }

    /// The tool and prompt names each member last listed (original names, and as exposed when the
    /// group prefixes them is decided by the prefix check), so a member that goes down is named.
    private let lastNames = Mutex<[String: Set<String>]>([:])

    func rememberNames(group: String, member: String, names: Set<String>) {
        lastNames.withLock { $0["\(group)\u{0}\(member)"] = names }
    }

    func lastKnownNames(group: String, member: String) -> Set<String> {
        lastNames.withLock { $0["\(group)\u{0}\(member)"] } ?? []
    }

    func record(group: String, down: [String], clashes: [String]) {
        health.withLock { $0[group] = (down, clashes) }
    }

    /// What /readyz reports of each group that has been listed: members down and clashing names.
    var readiness: [String: [String: [String]]] {
        health.withLock { $0.mapValues { ["down": $0.down, "clashes": $0.clashes] } }
    }

    static func response(rawID: String?, result: [String: Any]) -> ByteBuffer {
        let json = (try? JSONSerialization.data(withJSONObject: result, options: [.withoutEscapingSlashes])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":\(json)}")
    }
}
