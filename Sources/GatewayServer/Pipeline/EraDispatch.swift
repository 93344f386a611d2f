import GatewayUpstream
import Hummingbird
import MCPMessages
import MCPTransport
import GatewayStdio
import GatewayMetrics
import GatewayConfig

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

    func respond(to request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response {
        guard let metrics, let route = context.route else { return try await transport(request, context: context) }
        let started = ContinuousClock.now
        defer { metrics.upstream(service: route.router.service, duration: ContinuousClock.now - started) }
        return try await transport(request, context: context)
    }

    private func transport(_ request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response {
        guard let route = context.route, let call = context.call else { throw .pipelineOrder(stage: "EraDispatch") }
        let exchange = MCPExchange(request: request, context: context.transport, route: route, caller: context.caller, call: call)
        switch route.upstream {
        case .http(let upstream):
            switch call.era {
            case .modern:
                if await modernHTTP.era(of: upstream, logger: context.logger) == .legacy {
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
            return try await proxy.forward(exchange, to: upstream)
        case .stdio(let manager):
            switch call.era {
            case .modern: return try await stdio.handleModern(exchange, manager: manager)
            case .sessionBased: return try await stdio.handle(exchange, manager: manager)
            }
        }
    }
}
