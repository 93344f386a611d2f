import GatewayMiddlewares
import GatewayAudit
import GatewayMetrics
import GatewayAuth
import AuthorizationServer
import Hummingbird
import MCPTransport
import MCPMessages
import GatewayConfig

/// Stage 7: the router's own `middlewares` (rate limits, …), in the router's order, on the
/// authenticated, parsed call. A middleware that answers the request itself (429, 503) is
/// answered as a JSON-RPC error for the request's id.
final class RouterMiddlewares: Sendable {
    /// Refusals are security events (`rate_limited`).
    let audit: (any AuditSink)?
    let metrics: GatewayMetrics?

    /// A class: the fast relay reaches it on every request, and a copy of a value holding the
    /// sink and the metrics retained both, from both cores, each time.
    init(audit: (any AuditSink)? = nil, metrics: GatewayMetrics? = nil) {
        self.audit = audit
        self.metrics = metrics
    }

    /// The refusal of the first middleware that answers the request itself; nil: go on.
    func apply(_ context: GatewayRequestContext) async throws(GatewayError) -> Response? {
        guard let call = context.call else { throw .pipelineOrder(stage: "RouterMiddlewares") }
        guard let refusal = try await refusal(context) else { return nil }
        return refusal.response(form: .jsonRPC(rawID: call.rawID))
    }

    /// The first middleware's refusal (counted and audited), or nil: go on. The fast relay asks
    /// this and answers with the refusal's JSON-RPC form itself.
    func refusal(_ context: GatewayRequestContext) async throws(GatewayError) -> GatewayError? {
        guard let route = context.route, let call = context.call else { throw .pipelineOrder(stage: "RouterMiddlewares") }
        // A forwarded request was admitted (and counted) by the instance it reached first.
        guard !route.middlewares.isEmpty, !context.credentialsVerifiedByHop else { return nil }
        let input = MiddlewareRequest(router: route.router.name, caller: context.caller, call: call, clientIP: context.clientIP, logger: context.logger)
        for middleware in route.middlewares {
            do {
                try await middleware.admit(input)
            } catch {
                noteRefusal(error, route: route, call: call, context: context)
                return error
            }
        }
        return nil
    }

    /// `refusal` without a task when every middleware of the route decides so (a rate limit on
    /// Redis asks on the calling event loop's own connection, or answers at once from what the
    /// instance reserved): the verdict, known at once in the common case. Nil: nothing was
    /// asked; use `refusal`.
    ///
    /// Takes the fast relay's admission rather than a context: its context is a stored property
    /// of a class, and handing it on as a value copies all of it (a dozen retains, several of
    /// objects every connection on both cores shares: the configuration, the route, the caller).
    /// The fields read here are read one by one.
    func refusalNow(_ admission: FastAdmission) -> MiddlewareVerdict? {
        let route = admission.route
        guard let call = admission.context.call, route.middlewaresDecideWithoutTask else { return nil }
        guard !route.middlewares.isEmpty, !admission.context.credentialsVerifiedByHop else { return .proceed }
        let input = MiddlewareRequest(
            router: route.router.name, caller: admission.context.caller, call: call, clientIP: admission.context.clientIP, logger: admission.context.logger
        )
        return verdict(from: 0, input: input, route: route)
    }

    /// The verdict of the route's middlewares from `index` on, in order.
    private func verdict(from index: Int, input: MiddlewareRequest, route: CompiledRoute) -> MiddlewareVerdict {
        var index = index
        while index < route.middlewares.count {
            switch route.middlewares[index].admitNow(input) {
            case .proceed:
                index += 1
            case .refused(let refusal):
                noteRefusal(refusal, route: route, call: input.call, caller: input.caller, clientIP: input.clientIP)
                return .refused(refusal)
            case .pending(let wait):
                let next = index + 1
                return .pending { [self] decided in
                    wait { [self] refusal in
                        if let refusal {
                            noteRefusal(refusal, route: route, call: input.call, caller: input.caller, clientIP: input.clientIP)
                            return decided(refusal)
                        }
                        switch verdict(from: next, input: input, route: route) {
                        case .proceed: decided(nil)
                        case .refused(let refusal): decided(refusal)
                        case .pending(let waitMore): waitMore(decided)
                        }
                    }
                }
            }
        }
        return .proceed
    }

    private func noteRefusal(_ error: GatewayError, route: CompiledRoute, call: MCPCall, context: GatewayRequestContext) {
        noteRefusal(error, route: route, call: call, caller: context.caller, clientIP: context.clientIP)
    }

    /// A rate limit's refusal is counted and audited (`rate_limited`).
    private func noteRefusal(_ error: GatewayError, route: CompiledRoute, call: MCPCall, caller: VerifiedCaller?, clientIP: String?) {
        guard case .rateLimited(let refusal) = error else { return }
        metrics?.rateLimited(router: route.router.name)
        audit?.record(AuditEvent("rate_limited", [
            ("router", .string(route.router.name)), ("policy", .string(refusal.policy)), ("user", caller.map { .string($0.claims.login) }),
            ("subject", caller.map { .string($0.claims.sub) }), ("ip", clientIP.map(AuditEvent.Value.string)),
            ("mcp_method", call.method.map(AuditEvent.Value.string)), ("tool", call.method == "tools/call" ? call.target.map(AuditEvent.Value.string) : nil),
        ]))
    }
}
