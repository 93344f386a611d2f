import GatewayTracing
import Tracing
import Instrumentation
import MCPTranslation
import GatewayUpstream
import Hummingbird
import GatewayAuth
import AuthorizationServer
import Logging
import MCPMessages
import MCPTransport
import GatewayStdio
import GatewayMetrics
import GatewayConfig
import GatewayCluster
import GatewayStore

/// The end of the pipeline: one dispatch by protocol era and transport. An HTTP upstream gets
/// the request relayed as it is, unless the client's era and the upstream's differ (then the
/// gateway translates: a 2026-07-28 client of a session-based server, or a session-based client
/// of a 2026-07-28-only server); a stdio service is served by the gateway in the client's era.
struct EraDispatch {
    let proxy: HTTPProxy
    let stdio: StdioBridge
    let modernHTTP: ModernHTTPTranslator
    /// Times the upstream's part: until the transport has the answer's head.
    var metrics: GatewayMetrics? = nil
    /// `tracing:`: the upstream's part is a client span, and the upstream is told its trace (an
    /// HTTP upstream in `traceparent`, a stdio child in the request's `params._meta.traceparent`).
    var tracing = false
    /// Groups (`services.<s>.group`), whose members this dispatch serves in turn.
    var groups: GroupServer? = nil
    /// Sessions held by another instance of the cluster: the request goes there.
    var hops: ClusterHops? = nil
    /// Users' own connections to OAuth-protected upstreams (`services.<s>.http.oauth`).
    var connections: UpstreamConnections? = nil

    func respond(to request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response {
        guard metrics != nil || tracing, let route = context.route else { return try await placed(request, context: context) }
        let started = ContinuousClock.now
        defer { metrics?.upstream(service: route.router.service, duration: ContinuousClock.now - started) }
        guard tracing else { return try await placed(request, context: context) }
        return try await traced(request, context: context, route: route)
    }

    /// `respond` under a client span. A function of its own: an async function's frame holds
    /// the temporaries of all its branches, and every request would allocate this one's.
    private func traced(_ request: Request, context: GatewayRequestContext, route: CompiledRoute) async throws(GatewayError) -> Response {
        let span = startSpan("upstream \(route.router.service)", context: ServiceContext.current ?? .topLevel, ofKind: .client)
        defer { span.end() }
        span.attributes["mcp_gateway.service"] = route.router.service
        var request = request
        var context = context
        let traceparent = GatewayTracing.traceparent(of: span.context)
        switch route.upstream {
        case .http:
            span.attributes["mcp_gateway.transport"] = "http"
            var head = request.head
            InstrumentationSystem.instrument.inject(span.context, into: &head.headerFields, using: HTTPFieldsInjector())
            request = Request(head: head, body: request.body)
        case .stdio:
            span.attributes["mcp_gateway.transport"] = "stdio"
            if let traceparent, let call = context.call { context.call = Self.stamped(call, traceparent: traceparent) }
        case .group(let group):
            span.attributes["mcp_gateway.transport"] = group.passthrough ? "http" : "group"
        }
        // The HTTP client's own span (AsyncHTTPClient traces its requests) nests under this one.
        let (request2, context2) = (request, context)
        let result: Result<Response, GatewayError> = await ServiceContext.withValue(span.context) {
            do throws(GatewayError) { return .success(try await placed(request2, context: context2)) } catch { return .failure(error) }
        }
        switch result {
        case .success(let response):
            if response.status.code >= 500 { span.setStatus(SpanStatus(code: .error)) }
            return response
        case .failure(let error):
            span.setStatus(SpanStatus(code: .error))
            throw error
        }
    }

    /// A request for a stdio child with `params._meta.traceparent` set (other messages as they are).
    static func stamped(_ call: MCPCall, traceparent: String) -> MCPCall {
        guard let message = call.message, message.kind == .request,
              let edited = message.editing("params", { params in
                  var meta = params["_meta"] as? [String: Any] ?? [:]
                  meta["traceparent"] = traceparent
                  params["_meta"] = meta
              })
        else { return call }
        return MCPCall(protocolVersion: call.protocolVersion, sessionID: call.sessionID, body: edited.bytes)
    }

    /// Ends what `route`'s transport kept for a group's client session `scope`: its pool children
    /// (stdio members) or its upstream sessions (session-based HTTP members).
    func endMemberScope(_ scope: String, route: CompiledRoute, caller: VerifiedCaller?, logger: Logger) async {
        switch route.upstream {
        case .stdio(let manager): await manager.endScope(subject: caller?.claims.sub, scope: scope)
        case .http(let configured):
            var upstream = configured
            // The upstream session was the user's: ended with the user's token.
            if configured.service.oauth != nil, let connections, let subject = caller?.claims.sub {
                upstream.authorization = try? await connections.authorization(subject: subject, service: configured.service)
            }
            await modernHTTP.endScope(scope, upstream: upstream, logger: logger)
        case .group: break
        }
    }

    /// The transport's answer, or, for a session another live instance holds, that instance's
    /// (one hop). An instance that cannot be connected to is taken for gone: the request is
    /// dispatched again, and the session taken over here.
    private func placed(_ request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response {
        do {
            return try await transport(request, context: context)
        } catch .stdioShuttingDown(let service) {
            // This instance is stopping and its children have ended: a serving instance answers.
            guard let hops, let elsewhere = await stdio.locator.elsewhereForNewSession(atHopLimit: context.atHopLimit),
                  case .heldElsewhere(let instance, let url) = elsewhere
            else { throw .stdioShuttingDown(service: service) }
            do {
                return try await hops.forward(request, context: context, instance: instance, url: url)
            } catch let error as GatewayError {
                throw error
            } catch {
                throw .stdioShuttingDown(service: service)
            }
        } catch .heldElsewhere(let instance, let url) {
            guard let hops, !context.atHopLimit else { throw .heldElsewhere(instance: instance, url: url) }
            do {
                return try await hops.forward(request, context: context, instance: instance, url: url)
            } catch let unreachable as ClusterHops.Unreachable {
                if unreachable.draining {
                    hops.membership.learned(instance, .draining(url: url))
                } else {
                    context.logger.warning("the gateway instance holding the session cannot be reached: taking the session over", metadata: ["instance": "\(instance)"])
                    hops.membership.learned(instance, .gone)
                }
                return try await transport(request, context: context)
            } catch let error as GatewayError {
                throw error
            } catch {
                throw .heldElsewhere(instance: instance, url: url)
            }
        }
    }

    private func transport(_ request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response {
        guard let route = context.route, let call = context.call else { throw .pipelineOrder(stage: "EraDispatch") }
        // Some clients send `notifications/initialized` without the session id the initialize
        // answer gave them: it announces nothing the gateway or a server needs, so it is accepted.
        if call.era == .sessionBased, request.method == .post, call.sessionID == nil, let message = call.message,
           message.kind == .notification, message.method == "notifications/initialized"
        {
            return Response(status: .accepted)
        }
        // A Multi Round-Trip retry goes to the instance that issued its requestState.
        if call.era == .modern, let state = call.message?.string(at: ["params", "requestState"]),
           let (instance, _) = RequestStateRouting.split(state), instance != ProcessInstance.id
        {
            return try await otherInstancesRetry(call, instance: instance, context: context)
        }
        switch route.upstream {
        case .http(let plain) where plain.service.oauth != nil:
            return try await connected(request, context: context, call: call, upstream: plain)
        case .group(let group) where group.passthrough && call.era == .modern:
            // A 2026-07-28 client of an OAuth-protected upstream: each request stands alone, so the
            // gateway holds no session for it; it goes straight to the upstream's route.
            guard let member = group.members.first else { throw .pipelineOrder(stage: "EraDispatch (passthrough)") }
            var memberContext = context
            memberContext.route = member.route
            return try await transport(request, context: memberContext)
        default:
            break
        }
        return try await transport(request, context: context, route: route, call: call, upstreamOverride: nil)
    }

    /// A retry whose requestState another instance issued: sent there while it runs.
    private func otherInstancesRetry(_ call: MCPCall, instance: String, context: GatewayRequestContext) async throws(GatewayError) -> Response {
        if !context.atHopLimit, let hops, let placement = try? await hops.membership.placement(of: instance) {
            switch placement {
            case .live(let url?), .draining(let url?): throw .heldElsewhere(instance: instance, url: url)
            default: break
            }
        }
        return ModernProtocol.error(
            .ok, code: JSONRPCErrorResponse.invalidParams,
            message: "requestState was issued by a gateway instance that is no longer running; send the request again without it", rawID: call.rawID
        )
    }

    /// A request for an OAuth-protected upstream: sent with the caller's own token, or answered
    /// with the way to connect when the caller has no usable connection.
    private func connected(_ request: Request, context: GatewayRequestContext, call: MCPCall, upstream plain: HTTPUpstream) async throws(GatewayError) -> Response {
        guard let connections, let route = context.route else { throw .pipelineOrder(stage: "EraDispatch (connections)") }
        guard let subject = context.caller?.claims.sub else { throw .pipelineOrder(stage: "EraDispatch (connections need a caller)") }
        let service = plain.service
        let answer = UpstreamConnections.connectAnswer(call)
        let sessionBased = context.memberScope != nil
        var authorization = try await connections.authorization(subject: subject, service: service)
        if authorization == nil, answer == "accept" {
            authorization = try await connections.awaitConnection(subject: subject, service: service)
        }
        guard let authorization else {
            return connections.connectRequired(call, service: service.name, sessionBased: sessionBased, retried: answer != nil)
        }
        var upstream = plain
        upstream.authorization = authorization
        let forwarded = answer == nil ? call : UpstreamConnections.withoutConnectAnswer(call)
        do {
            return try await transport(request, context: context, route: route, call: forwarded, upstreamOverride: upstream)
        } catch .upstream(let error) where error.kind == .authorizationRequired {
            return connections.connectRequired(call, service: service.name, sessionBased: sessionBased, retried: false)
        }
    }

    private func transport(
        _ request: Request, context: GatewayRequestContext, route: CompiledRoute, call: MCPCall, upstreamOverride: HTTPUpstream?
    ) async throws(GatewayError) -> Response {
        var exchange = MCPExchange(request: request, context: context.transport, route: route, caller: context.caller, call: call)
        exchange.memberScope = context.memberScope
        switch route.upstream {
        case .http(let configured):
            return try await httpTransport(exchange, upstream: upstreamOverride ?? configured, logger: context.logger)
        case .stdio(let manager):
            switch call.era {
            case .modern: return try await stdio.handleModern(exchange, manager: manager)
            case .sessionBased: return try await stdio.handle(exchange, manager: manager)
            }
        case .group(let group):
            guard let groups else { throw .pipelineOrder(stage: "EraDispatch (groups)") }
            return try await groups.respond(request, context: context, group: group, members: self)
        }
    }

    /// An HTTP upstream's transport for the call's era. (Each transport's own function keeps the
    /// others' temporaries out of its async frame.)
    private func httpTransport(_ exchange: MCPExchange, upstream: HTTPUpstream, logger: Logger) async throws(GatewayError) -> Response {
        let (request, call) = (exchange.request, exchange.call)
        switch call.era {
        case .modern:
            if await modernHTTP.era(of: upstream, logger: logger) == .legacy {
                return try await modernHTTP.handle(exchange, upstream: upstream)
            }
        case .sessionBased:
            if modernHTTP.isBridged(request) {
                return try await modernHTTP.bridge(exchange, upstream: upstream)
            }
            if request.method == .post, call.sessionID == nil {
                // Possibly a session-based client starting a session: if the upstream refuses
                // initialize as a 2026-07-28-only server, the gateway bridges.
                return try await modernHTTP.legacyInitialize(exchange, upstream: upstream, proxy: proxy)
            }
        }
        return try await proxy.forward(exchange, to: upstream, translator: modernHTTP)
    }
}
