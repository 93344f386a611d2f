import GatewayStdio
import GatewayUpstream
import MCPTransport
import GatewayAuth
import GatewayConfig
import Hummingbird

/// Stage 5: on a protected router, the bearer token checked (audience first, then scope, then
/// the allow-lists) and its verified caller put on the context; anything else is answered with
/// the RFC 6750 / RFC 9728 challenge that tells the client where to sign in.
struct Authentication: RouterMiddleware {
    typealias Context = GatewayRequestContext

    /// The gateway's own access tokens (`ResourceGate`), or any other verifier.
    let gate: any AccessTokenVerifier

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let route = context.route else { throw GatewayError.pipelineOrder(stage: "Authentication") }
        guard route.router.auth == .oauth else { return try await next(request, context) }
        var context = context
        switch await gate.check(request.headers, route: route) {
        case .success(let caller): context.caller = caller
        case .failure(let failure): throw GatewayError.oauth(gate.refusal(failure, router: route.router))
        }
        return try await next(request, context)
    }
}
