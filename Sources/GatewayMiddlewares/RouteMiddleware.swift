package import GatewayAuth
package import Logging
package import MCPMessages
package import MCPTransport

/// What a router's middleware sees of a request: it runs after authentication and parsing, so
/// the router, the verified caller and the parsed MCP call are all known.
package struct MiddlewareRequest: Sendable {
    package let router: String
    /// The verified caller; nil on `auth: none` routers.
    package let caller: VerifiedCaller?
    package let call: MCPCall
    /// The client's address as the gateway trusts it.
    package let clientIP: String?
    package let logger: Logger

    package init(router: String, caller: VerifiedCaller?, call: MCPCall, clientIP: String?, logger: Logger) {
        self.router = router
        self.caller = caller
        self.call = call
        self.clientIP = clientIP
        self.logger = logger
    }
}

/// One entry of `middlewares:` as a router applies it (`routers.<r>.middlewares`, in order). A
/// middleware lets the request on by returning, or answers it itself by throwing; a new kind is a
/// new conforming type, and neither routing nor the pipeline changes.
package protocol RouteMiddleware: Sendable {
    /// The name it has under `middlewares:`.
    var name: String { get }
    func admit(_ request: MiddlewareRequest) async throws(GatewayError)
    /// Whether `admitNow` decides without a task (the fast relay then decides on its
    /// event loop; otherwise it runs `admit` in a task).
    var decidesWithoutTask: Bool { get }
    /// `admit` without a task: the verdict when it is known at once (a rate limit admitted from
    /// what the instance reserved), or how to wait for it. Counts the request either way.
    func admitNow(_ request: MiddlewareRequest) -> MiddlewareVerdict
}

/// A middleware's verdict on a request, as `admitNow` finds it.
package enum MiddlewareVerdict: Sendable {
    /// Go on.
    case proceed
    /// The middleware answers the request itself.
    case refused(GatewayError)
    /// Not known yet: the function starts what decides it and hands the verdict (nil: go on)
    /// to its argument, on the calling thread or another one.
    case pending(@Sendable (_ decided: @escaping @Sendable (GatewayError?) -> Void) -> Void)
}

extension RouteMiddleware {
    package var decidesWithoutTask: Bool { false }

    package func admitNow(_ request: MiddlewareRequest) -> MiddlewareVerdict {
        .pending { decided in admitInTask(request, decided: decided) }
    }

    /// `admit` run in a task, its verdict handed to `decided`.
    package func admitInTask(_ request: MiddlewareRequest, decided: @escaping @Sendable (GatewayError?) -> Void) {
        Task {
            do throws(GatewayError) {
                try await admit(request)
                decided(nil)
            } catch {
                decided(error)
            }
        }
    }
}
