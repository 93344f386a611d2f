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
        let methods = route.router.authMethods
        // An API key is decisive when the router takes keys and one is presented (X-API-Key, or a
        // bearer token that is not a JWT); otherwise the gateway's own access token is checked.
        let key = methods.contains(.apiKey) ? APIKeys.presented(request.headers) : nil
        let oauth = key == nil && methods.contains(.oauth)
        let checked: Result<VerifiedCaller, TokenCheckFailure>
        if tracing {
            let span = startSpan(key == nil ? "token check" : "api key check", context: ServiceContext.current ?? .topLevel)
            checked = await ServiceContext.withValue(span.context) { [context] in await verify(request, key: key, oauth: oauth, route: route, runtime: context.runtime) }
            if case .failure(let failure) = checked { span.attributes["mcp_gateway.auth.failure"] = failure.metricReason }
            span.end()
        } else {
            checked = await verify(request, key: key, oauth: oauth, route: route, runtime: context.runtime)
        }
        switch checked {
        case .success(let caller):
            context.caller = caller
            context.record?.update { fields in
                fields.user = caller.claims.login
                fields.caller = caller
            }
        case .failure(let failure):
            // With the gateway's OAuth among the router's kinds, the challenge names where to sign in.
            let refusal = methods.contains(.oauth) ? gate.refusal(failure, router: route.router) : APIKeys.refusal(failure)
            metrics?.authFailure(router: route.router.name, reason: failure.metricReason)
            // A missing token is how every OAuth client starts (to read the challenge): not an event.
            if case .missingToken = failure {} else {
                var fields: [(String, AuditEvent.Value?)] = [("reason", .string(refusal.code)), ("router", .string(route.router.name)), ("ip", context.clientIP.map(AuditEvent.Value.string))]
                if case .denied(let login) = failure { fields.append(("user", .string(login))) }
                if key != nil { fields.append(("credential", .string("api_key"))) }
                audit?.record(AuditEvent("auth.denied", fields))
            }
            throw .oauth(refusal)
        }
    }

    /// The presented API key against `auth.apiKeys` in force, or the gateway's access token.
    private func verify(_ request: Request, key: String?, oauth: Bool, route: CompiledRoute, runtime: RuntimeConfiguration?) async -> Result<VerifiedCaller, TokenCheckFailure> {
        if let key {
            return APIKeys.check(key, keys: runtime?.configuration.auth?.apiKeys ?? [], route: route, issuer: runtime?.configuration.publicURL.origin ?? "")
        }
        guard oauth else { return .failure(.missingToken) }
        return await gate.check(request.headers, route: route)
    }
}
