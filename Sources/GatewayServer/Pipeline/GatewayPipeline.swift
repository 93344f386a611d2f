import GatewayStdio
import GatewayUpstream
import MCPTransport
import GatewayAuth
package import GatewayConfig
package import GatewayStore
package import Hummingbird
import Logging

/// The request's way through one entry point, stage by stage. Each stage is a Hummingbird
/// middleware over `GatewayRequestContext` that either answers or adds what it established to the
/// context for the stages after it:
///
/// 1. `ClientAddressing`: configuration in force, client address and scheme behind trusted proxies
/// 2. `FrontDoor`: health, readiness, the authorization server, `/verify`, resource metadata
/// 3. `RouteMatching`: the router (`context.route`); from here on errors are JSON-RPC
/// 4. `RequestChecks`: Host, Origin, method
/// 5. `Authentication`: the verified caller (`context.caller`) on protected routers
/// 6. `MCPCallParsing`: the MCP call read and parsed once (`context.call`)
/// 7. `RouterMiddlewares`: the router's `middlewares` (rate limits) on the authenticated, parsed call
///
/// Stages that need an authenticated, parsed call (tool policies, audit, metrics) go after
/// stage 6. `EraDispatch` then hands the call to its transport.
struct GatewayPipeline<Stages: MiddlewareProtocol>: HTTPResponder
where Stages.Input == Request, Stages.Output == Response, Stages.Context == GatewayRequestContext {
    typealias Context = GatewayRequestContext

    let stages: Stages
    let dispatch: EraDispatch
    /// `log.accessLog`: one line per request when its response head is ready; nil when off.
    let accessLog: Logger?
    /// `audit:`: an `mcp.request` line per MCP request, once its response is sent; nil when off.
    let audit: RequestAudit?

    func respond(to request: Request, context: Context) async throws -> Response {
        guard accessLog != nil || audit != nil else { return try await answer(request, context: context) }
        let started = ContinuousClock.now
        var response = try await answer(request, context: context)
        let fields = context.record.current
        if let audit {
            response = audit.auditing(response, request: request, record: fields, clientIP: context.clientIP, started: started)
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

    private func answer(_ request: Request, context: Context) async throws -> Response {
        do {
            return try await stages.handle(request, context: context) { request, context in
                try await dispatch.respond(to: request, context: context)
            }
        } catch let error as GatewayError {
            // Before a router matched: the error in plain JSON (after, `RouteMatching` answered it).
            return error.response(routeMatched: context.route != nil)
        }
    }
}

extension GatewayComponents {
    /// The pipeline of one entry point; `readinessStore` is what /readyz pings (nil: memory).
    package func responder(for entryPoint: EntryPoint, readinessStore: (any KeyValueStore)?) -> some HTTPResponder<GatewayRequestContext> {
        GatewayPipeline(
            stages: stages(for: entryPoint, readinessStore: readinessStore),
            dispatch: EraDispatch(proxy: proxy, stdio: stdio, modernHTTP: modernHTTP),
            accessLog: accessLog,
            audit: audit.map { RequestAudit(sink: $0.sink, arguments: $0.configuration.arguments, redactKeys: $0.configuration.redactKeys) }
        )
    }

    @MiddlewareFixedTypeBuilder<Request, Response, GatewayRequestContext>
    private func stages(for entryPoint: EntryPoint, readinessStore: (any KeyValueStore)?) -> some MiddlewareProtocol<Request, Response, GatewayRequestContext> {
        ClientAddressing(entryPoint: entryPoint, holder: holder)
        FrontDoor(entryPoint: entryPoint, holder: holder, registration: registration, oauth: oauth, gate: gate, stdio: stdio, store: readinessStore)
        RouteMatching(entryPoint: entryPoint)
        RequestChecks(entryPoint: entryPoint)
        Authentication(gate: gate, audit: audit?.sink)
        MCPCallParsing()
        RouterMiddlewares(audit: audit?.sink)
    }
}
