import GatewayRouting
import GatewayAuth
import AuthorizationServer
import Foundation
import GatewayPolicies
import GatewayCluster
import MCPTranslation
import GatewayConfig
import GatewayUpstream
import GatewayStdio
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
import MCPTransport
import NIOCore
import NIOHTTP1

/// A request the fast relay carries: the pipeline's stages ran on it without suspending, and the
/// era dispatch would relay it as it is, to a plain HTTP upstream or to the child of a stdio
/// session this process holds. A class: the connection handler keeps one per request through
/// every step, and the request and context are large values.
final class FastAdmission {
    var request: Request
    var context: GatewayRequestContext
    let route: CompiledRoute
    let destination: Destination

    enum Destination {
        case http(HTTPUpstream, RelayTarget)
        /// A session-based client's request for the child of `session` (held here, the caller's);
        /// `manager`: the session's own (after a reload it may be an older one, with its own settings).
        case stdio(StdioSessionManager, LegacySession)
    }

    /// The service the request goes to (the metrics' label): kept, as reading it out of
    /// `destination` copies the whole case's payload.
    let serviceName: String
    /// An HTTP upstream's session the store has not confirmed for this caller in the last seconds:
    /// checked (`SessionBindings.check`) after the router's middlewares, where `HTTPProxy`
    /// checks it, before the request is sent.
    var sessionToCheck: String?
    /// A session-based client's `initialize` without a session: its answer is held when the
    /// upstream refuses it (400) until the body says whether the upstream is a 2026-07-28-only
    /// server (-32022), whose sessions the full pipeline bridges (`ModernHTTPTranslator.legacyInitialize`).
    var startsSession = false

    init(request: Request, context: GatewayRequestContext, route: CompiledRoute, destination: Destination) {
        self.request = request
        self.context = context
        self.route = route
        self.destination = destination
        switch destination {
        case .http(let upstream, _): serviceName = upstream.service.name
        case .stdio(let manager, _): serviceName = manager.service.name
        }
    }
}

/// The fast path is the pipeline's own stages, run where each can decide at once; a request any
/// stage cannot decide without waiting (a token not verified in the last seconds, a policy, a
/// session, a translation, traces) takes the full pipeline instead. `FastRelay` (the connection
/// handler) asks twice: at the request head, and once the body is in; it runs the router's
/// middlewares (stage 7) itself, and records the audit line and metrics.
extension GatewayPipeline {
    /// Whether the fast relay may serve this entry point at all: traces need the full pipeline
    /// (a span per request, carried in task-local context); audit lines and metrics the relay
    /// records itself.
    var relaysFast: Bool { !tracing }

    /// Stages 1 to 5 on a request head, or nil when the full pipeline must answer. `tokens`: what
    /// the token check said of the connection's last token.
    func fastAdmission(_ head: HTTPRequest, channel: any Channel, peer: GatewayRequestContext.Peer, logger: Logger, tokens: inout TokenMemo, routes: inout RouteMemo) -> FastAdmission? {
        // A GET is a session's stream (to an HTTP upstream); DELETE ends a session (the full
        // pipeline unbinds it).
        let isStream = head.method == .get
        guard head.method == .post || isStream, !hops.membership.isDraining else { return nil }
        let fields = head.headerFields
        // Browsers (CORS, Origin checks), forwarded hops, `Expect`, upgrades and closing
        // connections: the full pipeline.
        guard !fields.contains(.origin), !fields.contains(.expect), !fields.contains(ClusterHops.signatureHeader),
              !fields.lists(.connection, token: "close"), !fields.lists(.connection, token: "upgrade")
        else { return nil }
        let sessionID = fields.value(of: MCPHeaders.sessionID)
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
        var context = GatewayRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger), peer: peer)
        clientAddressing.apply(request, &context)
        let route: CompiledRoute
        if let runtime = context.runtime, let (remembered, host) = routes.route(of: head, runtime: runtime) {
            // The connection's last request had this host and path under this configuration:
            // routing and the host check would decide the same again.
            route = remembered
            context.route = route
            context.host = host
            context.legacyEndpoint = nil
            context.record?.update { fields in
                fields.router = route.router.name
                fields.route = route
            }
        } else {
            do {
                try routeMatching.apply(request, &context)
                try requestChecks.apply(request, context)
            } catch {
                return nil
            }
            // The front door answers no router's MCP path that `relaysFast` admits (checked per
            // configuration), so only that path (not its legacy SSE endpoints) is relayed
            // (the path exactly as sent: anything routing had to normalize takes the full pipeline).
            guard context.legacyEndpoint == nil, let matched = context.route, matched.relaysFast, request.uri.path == matched.router.mcpPath else { return nil }
            route = matched
            if let runtime = context.runtime, runtime.routeTable(entryPoint: routeMatching.entryPoint.name)?.routesByHostAndPath == true {
                routes = RouteMemo(runtime: runtime, head: head, route: route, host: context.host)
            }
        }
        var httpDestination: FastAdmission.Destination?
        switch route.upstream {
        case .http(let upstream):
            guard let target = upstream.relayTarget else { return nil }
            if let version = fields.value(of: MCPHeaders.protocolVersion), !MCPVersions.sessionBased.contains(version) {
                // 2026-07-28 (or a version the full pipeline negotiates): to an upstream known to
                // speak it.
                guard !isStream, sessionID == nil, dispatch.modernHTTP.knownEra(of: upstream, logger: logger) == .modern else { return nil }
            } else if isStream {
                // Session-based: a GET stream only in a session (checked once the caller is known).
                guard sessionID != nil else { return nil }
            }
            httpDestination = .http(upstream, target)
        case .stdio:
            // A request in a session of a stdio child: the session is looked up once the caller
            // is known. One instance only (in a cluster the store says where a session is).
            guard !isStream, sessionID != nil, !dispatch.stdio.locator.forwards,
                  let version = fields.value(of: MCPHeaders.protocolVersion), StdioBridge.supportedVersions.contains(version)
            else { return nil }
        case .group:
            return nil
        }
        if route.router.auth == .oauth {
            let methods = route.router.authMethods
            switch Authentication.credential(request, methods: methods, issuers: context.runtime?.configuration.auth?.jwtIssuers ?? []) {
            case .gatewayToken:
                guard let authorization = fields.value(of: .authorization) else { return nil }
                if let caller = tokens.caller(for: authorization, route: route) {
                    context.caller = caller
                } else {
                    guard let (caller, until) = authentication.gate.admittedFromCache(fields, route: route) else { return nil }
                    tokens = TokenMemo(authorization: authorization, route: route, caller: caller, until: until)
                    context.caller = caller
                }
            case .apiKey, .externalToken, .absent:
                return nil
            }
        }
        if let httpDestination {
            let admission = FastAdmission(request: request, context: context, route: route, destination: httpDestination)
            // An upstream's own session, confirmed for this router and caller a moment ago, goes
            // on as `HTTPProxy.forward` would send it; any other session id is checked with the
            // store before the request is sent (`FastRelay`). A session this process bridged (its
            // requests are translated) takes the full pipeline.
            if let sessionID, !dispatch.proxy.bindings.isRecentlyChecked(sessionID, router: route.router.name, subject: context.caller?.claims.sub, kind: "http") {
                guard !dispatch.modernHTTP.isBridged(request) else { return nil }
                admission.sessionToCheck = sessionID
            }
            return admission
        }
        guard let sessionID, let (manager, session) = stdioSession(sessionID, route: route, caller: context.caller) else { return nil }
        return FastAdmission(request: request, context: context, route: route, destination: .stdio(manager, session))
    }

    /// The session `id` of a stdio route when this process holds it for `caller` and the store
    /// confirmed so within the last seconds (`SessionBindings.isRecentlyChecked`): what
    /// `StdioBridge` would find after asking the store. Sessions bridged to a 2026-07-28-only
    /// child (stamped, translated) take the full pipeline.
    private func stdioSession(_ id: String, route: CompiledRoute, caller: VerifiedCaller?) -> (StdioSessionManager, LegacySession)? {
        guard case .stdio(let manager) = route.upstream,
              dispatch.stdio.bindings.isRecentlyChecked(id, router: route.router.name, subject: caller?.claims.sub),
              let (owner, session) = dispatch.stdio.registry.session(serviceName: manager.service.name, id: id),
              session.isRelayable(for: caller?.claims.sub)
        else { return nil }
        return (owner, session)
    }

    /// Stage 6 and the era dispatch's choice once the body is in: a single 2026-07-28 request or
    /// notification in strict JSON, that the dispatch would relay as it is; for a stdio session,
    /// a single request other than `initialize`. Nil: the full pipeline.
    func fastCall(_ admission: FastAdmission, body: ByteBuffer) -> FastAdmission? {
        if case .stdio = admission.destination { return fastSessionCall(admission, body: body) }
        let header = admission.request.headers.value(of: MCPHeaders.protocolVersion)
        if header.map(MCPVersions.sessionBased.contains) ?? true { return fastSessionBasedHTTPCall(admission, header: header, body: body) }
        guard let header, MCPVersions.modern.contains(header) else { return nil }
        // A body the strict reading refuses takes the full pipeline, which answers why.
        guard let call = MCPCall.strictlyRead(protocolVersion: header, sessionID: nil, body: body) else { return nil }
        guard call.era == .modern, let message = call.message, message.method != "subscriptions/listen",
              message.value(at: ["params", "requestState"]) == nil
        else { return nil }
        // A body naming another version than the header: `MCPCallParsing` reconciles the two.
        if let bodyVersion = message.string(at: ModernProtocol.protocolVersionPath), bodyVersion != header { return nil }
        admission.context.call = call
        admission.request.body = RequestBody(buffer: body)
        return admission
    }

    /// A session-based client's request to an HTTP upstream, that `EraDispatch` would relay as it
    /// is: a single message (a request, a notification other than a session-less
    /// `notifications/initialized`, which the gateway answers itself, or the client's answer to a
    /// request of the server's), or a session's GET stream without a body. A session-less
    /// `initialize` is relayed too, unless its upstream turns out to be 2026-07-28-only (then the
    /// full pipeline bridges it: `FastAdmission.startsSession`).
    private func fastSessionBasedHTTPCall(_ admission: FastAdmission, header: String?, body: ByteBuffer) -> FastAdmission? {
        let sessionID = admission.request.headers.value(of: MCPHeaders.sessionID)
        if admission.request.method == .get {
            guard body.readableBytes == 0 else { return nil }
            admission.context.call = MCPCall(protocolVersion: header, sessionID: sessionID, body: nil)
            return admission
        }
        guard let call = MCPCall.strictlyRead(protocolVersion: header, sessionID: sessionID, body: body),
              call.era == .sessionBased, let message = call.message,
              // A request or notification, or the client's answer to a request of the server's.
              message.method != nil || message.isResponse,
              sessionID != nil || message.method != "notifications/initialized",
              // A body naming a version: `MCPCallParsing` reconciles it with the header.
              message.value(at: ModernProtocol.protocolVersionPath) == nil
        else { return nil }
        admission.startsSession = sessionID == nil && message.method == "initialize" && message.isRequest
        admission.context.call = call
        admission.request.body = RequestBody(buffer: body)
        return admission
    }

    private func fastSessionCall(_ admission: FastAdmission, body: ByteBuffer) -> FastAdmission? {
        guard let call = MCPCall.strictlyRead(
            protocolVersion: admission.request.headers.value(of: MCPHeaders.protocolVersion), sessionID: admission.request.headers.value(of: MCPHeaders.sessionID), body: body
        ) else { return nil }
        guard call.era == .sessionBased, let message = call.message, message.isRequest, message.method != "initialize" else { return nil }
        admission.context.call = call
        admission.request.body = RequestBody(buffer: body)
        return admission
    }

    /// The upstream request's head, by the proxy's header policy.
    /// `body` nil: a session's GET stream.
    func fastUpstreamRequest(_ admission: FastAdmission, upstream: HTTPUpstream, target: RelayTarget, body: ByteBuffer?, into buffer: inout ByteBuffer) throws(UpstreamRequestWriter.Refused) {
        let context = admission.context
        try HTTPProxy.fastUpstreamRequest(
            for: admission.request, context: context.transport, upstream: upstream, caller: context.caller,
            target: target, body: body, into: &buffer
        )
    }
}

/// Where a connection's last fast-relayed request was routed: the next one with the same
/// authority and path (query included, as sent) under the same configuration goes there without
/// routing it again. Kept only when the entry point's rules read nothing but host and path
/// (`RouteTable.routesByHostAndPath`), and only for a request that routing, the host check and
/// the fast path's own route checks all admitted: the same text then gets the same answer.
struct RouteMemo {
    /// The configuration's serial, not a weak reference (see `InstanceSerial`): an idle
    /// connection does not keep a replaced configuration alive.
    private var runtime = 0
    private var authority: String?
    private var path: String?
    /// Unretained: valid only while its configuration is, which `route(of:runtime:)` checks
    /// against the configuration its caller holds (the configuration's tables own its routes).
    private var route: Unmanaged<CompiledRoute>?
    private var host = ""

    init() {}

    init(runtime: RuntimeConfiguration, head: HTTPRequest, route: CompiledRoute, host: String) {
        self.runtime = runtime.serial
        self.authority = head.authority
        self.path = head.path
        self.route = .passUnretained(route)
        self.host = host
    }

    /// The route and host of `head` when it is the remembered request's twin under `runtime`.
    func route(of head: HTTPRequest, runtime: RuntimeConfiguration) -> (CompiledRoute, String)? {
        guard let route, self.runtime == runtime.serial, let path, head.path == path, head.authority == authority else { return nil }
        return (route.takeUnretainedValue(), host)
    }
}

/// The connection's last token and the token check's answer for it on one route, until the gate
/// itself would check again: a client presents the same token request after request, and the
/// exact same header on the same compiled route (one configuration generation) within that time
/// gets the same answer without hashing the token again.
struct TokenMemo {
    private var authorization = ""
    /// The route's serial (`InstanceSerial`): a route made by a reload never matches.
    private var route = 0
    private var caller: VerifiedCaller?
    private var until = Date.distantPast

    init() {}

    init(authorization: String, route: CompiledRoute, caller: VerifiedCaller, until: Date) {
        self.authorization = authorization
        self.route = route.serial
        self.caller = caller
        self.until = until
    }

    func caller(for authorization: String, route: CompiledRoute) -> VerifiedCaller? {
        guard let caller, self.route == route.serial, Date() < until, self.authorization == authorization else { return nil }
        return caller
    }
}
