import GatewayUpstream
import Hummingbird
import MCPMessages
import MCPTransport
import GatewayStdio

/// The end of the pipeline: one dispatch by protocol era and transport. An HTTP upstream gets
/// the request relayed as it is, unless the client's era and the upstream's differ (then the
/// gateway translates: a 2026-07-28 client of a session-based server, or a session-based client
/// of a 2026-07-28-only server); a stdio service is served by the gateway in the client's era.
struct EraDispatch {
    let proxy: HTTPProxy
    let stdio: StdioBridge
    let modernHTTP: ModernHTTPTranslator

    func respond(to request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response {
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
