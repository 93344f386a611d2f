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
struct RouteMatching: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let entryPoint: EntryPoint

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let runtime = context.runtime else { throw GatewayError.pipelineOrder(stage: "RouteMatching") }
        let incoming: IncomingRequest
        let matched: RouteTable<CompiledRoute>.Entry?
        do {
            incoming = try IncomingRequest(request)
            matched = try incoming.route(in: runtime.routeTable(entryPoint: entryPoint.name))
        } catch {
            throw GatewayError.ambiguousPath(detail: error.detail)
        }
        guard let route = matched?.target else {
            throw GatewayError.noRoute(host: incoming.host, path: incoming.path)
        }
        let mcpPath = route.router.mcpPath
        guard incoming.path == mcpPath || incoming.path == mcpPath + "/" else {
            throw GatewayError.notMCPEndpoint(router: route.router.name, mcpPath: mcpPath)
        }
        var context = context
        context.route = route
        context.host = incoming.host
        context.record.update { fields in
            fields.router = route.router.name
            fields.route = route
        }
        do {
            return try await next(request, context)
        } catch let error as GatewayError {
            Self.log(error, router: route.router.name, logger: context.logger)
            return error.response(routeMatched: context.route != nil)
        }
    }

    private static func log(_ error: GatewayError, router: String, logger: Logger) {
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
