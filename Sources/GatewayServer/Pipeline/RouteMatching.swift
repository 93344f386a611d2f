import GatewayStdio
import MCPTransport
import GatewayUpstream
import GatewayConfig
import GatewayRouting
import Hummingbird
import Logging

/// Stage 3: the router whose MCP endpoint this is, by the entry point's route table in force.
/// A path that reads two ways is refused (400), one no router claims is not found (404), and a
/// router answers MCP at its `mcpPath` only. From here on the client is an MCP client: errors
/// become JSON-RPC error objects, and upstream and start failures are logged with the router.
struct RouteMatching {
    let entryPoint: EntryPoint

    func apply(_ request: Request, _ context: inout GatewayRequestContext) throws(GatewayError) {
        guard let runtime = context.runtime else { throw .pipelineOrder(stage: "RouteMatching") }
        let incoming: IncomingRequest
        let matched: RouteTable<CompiledRoute>.Entry?
        do {
            incoming = try IncomingRequest(request)
            matched = try incoming.route(in: runtime.routeTable(entryPoint: entryPoint.name))
        } catch {
            throw .ambiguousPath(detail: error.detail)
        }
        guard let route = matched?.target else {
            throw .noRoute(host: incoming.host, path: incoming.path)
        }
        let mcpPath = route.router.mcpPath
        context.legacyEndpoint = nil
        if incoming.path != mcpPath, incoming.path != mcpPath + "/" {
            guard let legacy = LegacySSEEndpoint(path: incoming.path, router: route.router) else {
                throw .notMCPEndpoint(router: route.router.name, mcpPath: mcpPath)
            }
            context.legacyEndpoint = legacy
        }
        context.route = route
        context.host = incoming.host
        context.record?.update { fields in
            fields.router = route.router.name
            fields.route = route
        }
    }

    /// A failure after the router matched, answered as a JSON-RPC error object (logged for the
    /// failures an operator must see: upstream and start failures).
    static func answer(_ error: GatewayError, router: String, logger: Logger) -> Response {
        log(error, router: router, logger: logger)
        return error.response(routeMatched: true)
    }

    static func log(_ error: GatewayError, router: String, logger: Logger) {
        switch error {
        case .upstream(let upstreamError):
            logger.warning("upstream request failed", metadata: [
                "router": "\(router)", "service": "\(upstreamError.service)", "reason": "\(error.reason)", "detail": "\(upstreamError.detail)",
            ])
        case .stdioStartFailed:
            logger.error("stdio service failed to start", metadata: ["router": "\(router)", "detail": "\(error.message)"])
        default:
            break
        }
    }
}
