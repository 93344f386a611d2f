import Tracing
import Instrumentation
import GatewayMetrics
import GatewayStdio
import GatewayUpstream
import MCPTransport
import GatewayAuth
import GatewayAudit
import AuthorizationServer
import GatewayConfig
import Hummingbird

/// Stage 5: on a protected router, the bearer token checked (audience first, then scope, then
/// the allow-lists) and its verified caller put on the context; anything else is answered with
/// the RFC 6750 / RFC 9728 challenge that tells the client where to sign in.
struct Authentication {
    /// The gateway's own access tokens (`ResourceGate`), or any other verifier.
    let gate: any AccessTokenVerifier
    /// Refused credentials are security events (`auth.denied`).
    var audit: (any AuditSink)? = nil
    var metrics: GatewayMetrics? = nil
    /// `tracing:`: the token check is a span of its own.
    var tracing = false

    func apply(_ request: Request, _ context: inout GatewayRequestContext) async throws(GatewayError) {
        guard let route = context.route else { throw .pipelineOrder(stage: "Authentication") }
        guard route.router.auth == .oauth else { return }
        let checked: Result<VerifiedCaller, TokenCheckFailure>
        if tracing {
            let span = startSpan("token check", context: ServiceContext.current ?? .topLevel)
            checked = await ServiceContext.withValue(span.context) { await gate.check(request.headers, route: route) }
            if case .failure(let failure) = checked { span.attributes["mcp_gateway.auth.failure"] = failure.metricReason }
            span.end()
        } else {
            checked = await gate.check(request.headers, route: route)
        }
        switch checked {
        case .success(let caller):
            context.caller = caller
            context.record?.update { fields in
                fields.user = caller.claims.login
                fields.caller = caller
            }
        case .failure(let failure):
            let refusal = gate.refusal(failure, router: route.router)
            metrics?.authFailure(router: route.router.name, reason: failure.metricReason)
            // A missing token is how every OAuth client starts (to read the challenge): not an event.
            if case .missingToken = failure {} else {
                var fields: [(String, AuditEvent.Value?)] = [("reason", .string(refusal.code)), ("router", .string(route.router.name)), ("ip", context.clientIP.map(AuditEvent.Value.string))]
                if case .denied(let login) = failure { fields.append(("user", .string(login))) }
                audit?.record(AuditEvent("auth.denied", fields))
            }
            throw .oauth(refusal)
        }
    }
}
