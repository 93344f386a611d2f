import GatewayStdio
import GatewayCluster
import GatewayUpstream
import MCPTransport
import GatewayAuth
package import GatewayConfig
package import GatewayStore
package import Hummingbird
import Logging
import GatewayMetrics
import MCPMessages
import MCPTranslation

/// The request's way through one entry point, stage by stage. Each stage is a small type with one
/// function that either answers the request or adds what it established to the context for the
/// stages after it:
///
/// 1. `ClientAddressing`: configuration in force, client address and scheme behind trusted proxies
/// 2. `FrontDoor`: health, readiness, the authorization server, `/verify`, resource metadata, `/`
/// 3. `RouteMatching`: the router (`context.route`); from here on errors are JSON-RPC
/// 4. `RequestChecks`: Host, Origin, method
///    `ClusterHops`: a request another instance forwarded, its signed identity as the caller
/// 5. `Authentication`: the verified caller (`context.caller`) on protected routers
/// 6. `MCPCallParsing`: the MCP call read and parsed once (`context.call`)
/// 7. `RouterMiddlewares`: the router's `middlewares` (rate limits) on the authenticated, parsed call
/// 8. `CallPolicyEnforcement`: the router's tool, resource and prompt policies for the caller
///    (a hidden name refused as unknown; list answers filtered on their way back)
///
/// Stages that need an authenticated, parsed call go after stage 6. The 2024-11-05 HTTP+SSE
/// endpoints stop after stage 5: `LegacySSEClients` turns each message into a request of its own
/// through this same pipeline.
/// `EraDispatch` then hands the call to its transport. The stages run in one flat function, by
/// concrete type: no generic middleware stack, no closure per stage, and the synchronous stages
/// cost no async frame.
final class GatewayPipeline: HTTPResponder, Sendable {
    typealias Context = GatewayRequestContext

    let clientAddressing: ClientAddressing
    let frontDoor: FrontDoor
    let routeMatching: RouteMatching
    let requestChecks: RequestChecks
    /// Requests forwarded between the instances of a cluster (admitted here; sent by `dispatch`).
    let hops: ClusterHops
    let authentication: Authentication
    let callParsing: MCPCallParsing
    let routerMiddlewares: RouterMiddlewares
    let callPolicies: CallPolicyEnforcement
    let dispatch: EraDispatch
    /// Session GET streams, for the `list_changed` a reload of policies owes them.
    let listChanges: ListChangeNotifier
    /// `log.accessLog`: one line per request when its response head is ready; nil when off (or
    /// when the log level filters `info` out).
    let accessLog: Logger?
    /// `audit:` and `metrics:`: what is recorded once a response is sent; nil when both are off.
    let observer: ResponseObserver?
    /// `tracing:`: a server span per request, its trace id in the audit record.
    let tracing: Bool
    /// CORS for the entry point's `allowedOrigins`.
    let crossOrigin: CrossOrigin
    /// The 2024-11-05 HTTP+SSE transport: its sessions drive the pipeline like clients.
    let legacySSE: LegacySSEClients
    /// MCP over WebSocket (upgrades decided in `webSocketUpgrade`).
    let webSockets: WebSocketClients

    init(
        clientAddressing: ClientAddressing,
        frontDoor: FrontDoor,
        routeMatching: RouteMatching,
        requestChecks: RequestChecks,
        hops: ClusterHops,
        authentication: Authentication,
        callParsing: MCPCallParsing,
        routerMiddlewares: RouterMiddlewares,
        callPolicies: CallPolicyEnforcement,
        dispatch: EraDispatch,
        listChanges: ListChangeNotifier,
        accessLog: Logger?,
        observer: ResponseObserver?,
        tracing: Bool,
        crossOrigin: CrossOrigin,
        legacySSE: LegacySSEClients,
        webSockets: WebSocketClients
    ) {
        self.clientAddressing = clientAddressing
        self.frontDoor = frontDoor
        self.routeMatching = routeMatching
        self.requestChecks = requestChecks
        self.hops = hops
        self.authentication = authentication
        self.callParsing = callParsing
        self.routerMiddlewares = routerMiddlewares
        self.callPolicies = callPolicies
        self.dispatch = dispatch
        self.listChanges = listChanges
        self.accessLog = accessLog
        self.observer = observer
        self.tracing = tracing
        self.crossOrigin = crossOrigin
        self.legacySSE = legacySSE
        self.webSockets = webSockets
    }

    /// `respond` as the first thing a request's own task does: its frames in one reserve.
    func respondInNewTask(to request: Request, context: Context) async throws -> Response {
        TaskStackReserve.make()
        return try await respond(to: request, context: context)
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        var response = try await answerWithCORS(request, context: context)
        // Stopping: no connection is kept for another request, so a proxy in front does not send
        // one on a connection this instance is about to close (it would not retry a POST).
        if hops.membership.isDraining { response.headers[.connection] = "close" }
        // Every SSE body is written under `cancellingOnInboundClose`, which ends the connection's
        // request stream when the body ends: the connection closes after it. A proxy in front
        // that was not told so sends its next request on it and gets no answer (nginx: "upstream
        // prematurely closed connection while reading response header").
        if MediaTypes.isEventStream(response.headers.value(of: .contentType)) {
            response.headers[.connection] = "close"
        }
        return response
    }

    private func answerWithCORS(_ request: Request, context: Context) async throws -> Response {
        // Browser clients on the entry point's allowed origins: preflights, and readable answers.
        guard let origin = crossOrigin.allowedOrigin(of: request) else { return try await observed(request, context: context) }
        if request.method == .options, request.headers.value(of: .accessControlRequestMethod) != nil {
            return crossOrigin.preflight(request, origin: origin)
        }
        var response = try await observed(request, context: context)
        crossOrigin.decorate(&response, origin: origin)
        return response
    }

    /// How a bridged session (legacy SSE, WebSocket) sends its client's messages through.
    var bridgedSend: BridgedSession.Send {
        { [self] request, context in (try? await observed(request, context: context)) ?? Response(status: .internalServerError) }
    }

    /// A request answered and observed (access log, audit, metrics, trace); also how the gateway's
    /// bridged sessions (legacy SSE, WebSocket) send their clients' messages through.
    func observed(_ request: Request, context: Context) async throws -> Response {
        var context = context
        // Stage 1 here, once (it resolves the forwarded address from the peer's): the access log,
        // the audit line and the span record the client it settled on, behind trusted proxies the
        // forwarded one, as the fast relay does.
        clientAddressing.apply(request, &context)
        guard accessLog != nil || observer != nil || tracing else { return await answer(request, context: context) }
        let record = RequestRecord()
        context.record = record
        let started = ContinuousClock.now
        var response = tracing ? await RequestSpan.around(request, record: record, clientIP: context.clientIP) { [context] in
            await answer(request, context: context)
        } : await answer(request, context: context)
        let fields = record.current
        if let observer, !fields.hopped {
            response = observer.observing(response, request: request, record: fields, clientIP: context.clientIP, started: started)
        }
        guard let accessLog else { return response }
        let elapsed = ContinuousClock.now - started
        // The path without its query: a query may carry a code or a state.
        accessLog.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
            "duration_ms": "\(elapsed.wholeMilliseconds)", "router": "\(fields.router ?? "")", "user": "\(fields.user ?? "")",
            "mcp_method": "\(fields.mcpMethod ?? "")", "tool": "\(fields.tool ?? "")", "ip": "\(context.clientIP ?? "")",
        ])
        return response
    }

    /// Stages 1 to 7, then the transport. Before a router matched, a failure is plain JSON; after,
    /// a JSON-RPC error object.
    private func answer(_ request: Request, context: Context) async -> Response {
        var request = request
        var context = context
        do {
            if let answered = try await frontDoor.answer(request, context: context) { return answered }
            try routeMatching.apply(request, &context)
        } catch {
            return error.response(routeMatched: false)
        }
        guard let route = context.route else { return GatewayError.pipelineOrder(stage: "EraDispatch").response(routeMatched: false) }
        if let legacy = context.legacyEndpoint {
            return await answerLegacy(legacy, request: request, context: context, route: route)
        }
        do {
            try requestChecks.apply(request, context)
            try await hops.admit(&request, &context)
            try await authentication.apply(request, &context)
            try await callParsing.apply(&request, &context)
            if let refused = try await routerMiddlewares.apply(context) { return refused }
            switch try callPolicies.apply(request, context) {
            case .pass:
                let response = try await dispatch.respond(to: request, context: context)
                guard request.method == .get else { return response }
                return sessionStream(response, request: request, context: context, route: route)
            case .refused(let refusal):
                return refusal
            case .filter(let filtering):
                return try await filtered(request, context: context, filtering: filtering)
            }
        } catch {
            return RouteMatching.answer(error, router: route.router.name, logger: context.logger)
        }
    }

    // The branches below are functions of their own: an async function's frame holds the
    // temporaries of every branch, and every request allocates `answer`'s.

    /// The 2024-11-05 HTTP+SSE endpoints: stages 4 and 5, then the legacy transport.
    private func answerLegacy(_ legacy: LegacySSEEndpoint, request: Request, context: Context, route: CompiledRoute) async -> Response {
        var context = context
        do {
            try requestChecks.apply(request, context)
            try await authentication.apply(request, &context)
            return try await legacySSE.respond(legacy, request: request, context: context, route: route, send: bridgedSend)
        } catch {
            return RouteMatching.answer(error, router: route.router.name, logger: context.logger)
        }
    }

    /// A session's GET stream, watched for the `list_changed` a reload of policies owes it.
    private func sessionStream(_ response: Response, request: Request, context: Context, route: CompiledRoute) -> Response {
        guard let call = context.call, call.era == .sessionBased, call.sessionID != nil, response.status == .ok,
              MediaTypes.isEventStream(response.headers.value(of: .contentType))
        else { return response }
        return listChanges.streaming(response, router: route.router.name, identity: context.caller?.identity)
    }

    /// A list answer filtered by the router's policies (further pages fetched as needed).
    private func filtered(_ request: Request, context: Context, filtering: CallPolicyEnforcement.Filtering) async throws(GatewayError) -> Response {
        let response = try await dispatch.respond(to: request, context: context)
        return CallPolicyEnforcement.filtered(response, filtering, nextPage: nextPage(request, context: context))
    }
}

extension GatewayPipeline {
    /// Fetches a further page of the request's list through the same dispatch, under an id of the
    /// gateway's own (answered with the client's).
    private func nextPage(_ request: Request, context: Context) -> CallPolicyEnforcement.NextPage? {
        guard let call = context.call, let message = call.message, let rawID = message.rawID else { return nil }
        let dispatch = self.dispatch
        return { cursor in
            let pageID = JSONRPCErrorResponse.jsonString("mcpgw-page-\(UInt64.random(in: 1...UInt64.max))")
            guard let edited = message.editing("params", { $0["cursor"] = cursor }), let renumbered = try? JSONRPCMessage(parsing: edited.replacingID(with: pageID)) else { return nil }
            var pageContext = context
            pageContext.call = MCPCall(protocolVersion: call.protocolVersion, sessionID: call.sessionID, body: renumbered.bytes)
            // A body of its own, not watched: see `GatewayMadeRequest`.
            let pageRequest = Request(head: request.head, body: RequestBody(buffer: renumbered.bytes))
            let answer: ByteBuffer? = await GatewayMadeRequest.$isActive.withValue(true) {
                guard let response = try? await dispatch.respond(to: pageRequest, context: pageContext) else { return nil }
                return await CallPolicyEnforcement.answer(of: response, rawID: pageID)
            }
            guard let answer, let parsed = try? JSONRPCMessage(parsing: answer) else { return nil }
            return parsed.replacingID(with: rawID)
        }
    }
}

extension GatewayComponents {
    /// The pipeline of one entry point; `readinessStore` is what /readyz pings (nil: memory).
    package func responder(for entryPoint: EntryPoint, readinessStore: (any KeyValueStore)?) -> some HTTPResponder<GatewayRequestContext> {
        ConnectionResponder(pipeline(for: entryPoint, readinessStore: readinessStore))
    }

    func pipeline(for entryPoint: EntryPoint, readinessStore: (any KeyValueStore)?) -> GatewayPipeline {
        GatewayPipeline(
            clientAddressing: ClientAddressing(entryPoint: entryPoint, holder: holder),
            frontDoor: FrontDoor(
                entryPoint: entryPoint, holder: holder, registration: registration, oauth: oauth, gate: gate, stdio: stdio, store: readinessStore,
                metrics: metrics.flatMap { metrics in
                    holder.current.configuration.metrics.map {
                        MetricsEndpoint(metrics: metrics, configuration: $0, entryPoint: entryPoint, holder: holder, stdio: stdio.registry, store: readinessStore)
                    }
                },
                admin: AdminPage(oauth: oauth, administration: administration, store: store, holder: holder, audit: audit),
                connectionsPage: ConnectionsPage(oauth: oauth, connections: connections, store: store, holder: holder),
                groups: groups
            ),
            routeMatching: RouteMatching(entryPoint: entryPoint),
            requestChecks: RequestChecks(entryPoint: entryPoint),
            hops: hops,
            authentication: Authentication(gate: gate, audit: audit?.sink, metrics: metrics, tracing: tracing, externalTokens: externalTokens),
            callParsing: MCPCallParsing(),
            routerMiddlewares: RouterMiddlewares(audit: audit?.sink, metrics: metrics),
            callPolicies: CallPolicyEnforcement(),
            dispatch: EraDispatch(proxy: proxy, stdio: stdio, modernHTTP: modernHTTP, metrics: metrics, tracing: tracing, groups: groups, hops: hops, connections: connections),
            listChanges: listChanges,
            accessLog: accessLog.flatMap { $0.logLevel <= .info ? $0 : nil },
            observer: audit == nil && metrics == nil ? nil : ResponseObserver(
                audit: audit.map { RequestAudit(sink: $0.sink, arguments: $0.configuration.arguments, redactKeys: $0.configuration.redactKeys) },
                metrics: metrics
            ),
            tracing: tracing,
            crossOrigin: CrossOrigin(entryPoint: entryPoint),
            legacySSE: legacySSE,
            webSockets: WebSocketClients(sessions: webSocketSessions)
        )
    }
}

/// What Hummingbird calls for each request of a connection: the pipeline, answered in a child task
/// of the connection's task. A task keeps every stack slab its deepest await needed until it ends,
/// and the pipeline's frames take ~80 KiB (each holds the request and its context); answered in the connection's own task, that memory would stay
/// with every idle keep-alive connection for its whole life (bench/results-connections.md). The
/// frames left in the connection's task stay small. The child is an `async let`, not a task group: no group to allocate and wait on
/// (5–9 % of the full pipeline's CPU per request), the same memory per idle connection. It starts
/// by making room for its frames in one slab (`TaskStackReserve`).
struct ConnectionResponder: HTTPResponder {
    typealias Context = GatewayRequestContext

    let pipeline: GatewayPipeline

    init(_ pipeline: GatewayPipeline) {
        self.pipeline = pipeline
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        async let response = pipeline.respondInNewTask(to: request, context: context)
        return try await response
    }
}
