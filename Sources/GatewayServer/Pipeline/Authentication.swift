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
    /// Access tokens of external issuers (`auth: jwt`); nil: none configured at start-up.
    var externalTokens: ExternalTokens? = nil

    /// Which verifier a request's credentials go to.
    enum Credential {
        case apiKey(String)
        case externalToken(String)
        case gatewayToken
        case absent
    }

    /// An API key is decisive when the router takes keys and one is presented (X-API-Key, or a
    /// bearer token that is not a JWT); a JWT whose `iss` is a configured external issuer goes to
    /// that issuer's keys; anything else to the gateway's own token check.
    static func credential(_ request: Request, methods: Set<AuthMethod>, issuers: [JWTIssuer]) -> Credential {
        if methods.contains(.apiKey), let key = APIKeys.presented(request.headers) { return .apiKey(key) }
        if methods.contains(.jwt), let token = BearerToken.from(request.headers), token.contains(".") {
            if !methods.contains(.oauth) || ExternalTokens.names(token, oneOf: issuers) { return .externalToken(token) }
        }
        return methods.contains(.oauth) ? .gatewayToken : .absent
    }

    func apply(_ request: Request, _ context: inout GatewayRequestContext) async throws(GatewayError) {
        guard let route = context.route else { throw .pipelineOrder(stage: "Authentication") }
        // Verified by `ClusterHops` (the instance that forwarded it checked the credentials).
        guard route.router.auth == .oauth, !context.credentialsVerifiedByHop else { return }
        let methods = route.router.authMethods
        let credential = Self.credential(request, methods: methods, issuers: context.runtime?.configuration.auth?.jwtIssuers ?? [])
        let checked: Result<VerifiedCaller, TokenCheckFailure>
        if tracing {
            let name = switch credential {
            case .apiKey: "api key check"
            case .externalToken: "external token check"
            case .gatewayToken, .absent: "token check"
            }
            let span = startSpan(name, context: ServiceContext.current ?? .topLevel)
            checked = await ServiceContext.withValue(span.context) { [context] in await verify(request, credential, route: route, runtime: context.runtime) }
            if case .failure(let failure) = checked { span.attributes["mcp_gateway.auth.failure"] = failure.metricReason }
            span.end()
        } else {
            checked = await verify(request, credential, route: route, runtime: context.runtime)
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
            let refusal = methods.contains(.oauth) ? gate.refusal(failure, router: route.router) : APIKeys.refusal(failure, methods: methods)
            metrics?.authFailure(router: route.router.name, reason: failure.metricReason)
            // A missing token is how every OAuth client starts (to read the challenge): not an event.
            if case .missingToken = failure {} else {
                var fields: [(String, AuditEvent.Value?)] = [("reason", .string(refusal.code)), ("router", .string(route.router.name)), ("ip", context.clientIP.map(AuditEvent.Value.string))]
                if case .denied(let login) = failure { fields.append(("user", .string(login))) }
                switch credential {
                case .apiKey: fields.append(("credential", .string("api_key")))
                case .externalToken: fields.append(("credential", .string("external_jwt")))
                case .gatewayToken, .absent: break
                }
                audit?.record(AuditEvent("auth.denied", fields))
            }
            throw .oauth(refusal)
        }
    }

    /// The presented API key against `auth.apiKeys` in force, an external issuer's token against
    /// `auth.jwt.issuers` in force, or the gateway's access token.
    private func verify(_ request: Request, _ credential: Credential, route: CompiledRoute, runtime: RuntimeConfiguration?) async -> Result<VerifiedCaller, TokenCheckFailure> {
        switch credential {
        case .apiKey(let key):
            return APIKeys.check(key, keys: runtime?.configuration.auth?.apiKeys ?? [], route: route, issuer: runtime?.configuration.publicURL.origin ?? "")
        case .externalToken(let token):
            guard let externalTokens else { return .failure(.invalidToken("no external issuer is trusted")) }
            return await externalTokens.check(token, issuers: runtime?.configuration.auth?.jwtIssuers ?? [], route: route)
        case .gatewayToken:
            return await gate.check(request.headers, route: route)
        case .absent:
            return .failure(.missingToken)
        }
    }
}
