package import GatewayAuth
import GatewayConfig
package import Hummingbird
package import Logging
package import MCPMessages
package import NIOCore

/// A router as its transport needs it: the token check's view (`ProtectedRoute`) and the headers
/// never passed upstream.
package protocol TransportRoute: ProtectedRoute {}

/// What the pipeline learned about the client's connection, as a transport needs it.
package struct TransportContext: Sendable {
    /// The client's connection: its close cancels work done on the client's behalf.
    package let channel: any Channel
    package let logger: Logger
    /// The client's address as the gateway trusts it (behind trusted proxies: theirs).
    package let clientIP: String?
    /// How the client reached the gateway (`http` or `https`), for `X-Forwarded-Proto` upstream.
    package let forwardedProto: String
    /// The request was forwarded between instances of the cluster as often as it may be
    /// (`ClusterHops.maximumHops`): it is served here or refused, never forwarded again.
    package var atHopLimit = false
    /// Forwarded by another instance of the cluster (its signature verified).
    package var forwarded = false

    package init(channel: any Channel, logger: Logger, clientIP: String?, forwardedProto: String, atHopLimit: Bool = false, forwarded: Bool = false) {
        self.channel = channel
        self.logger = logger
        self.clientIP = clientIP
        self.forwardedProto = forwardedProto
        self.atHopLimit = atHopLimit
        self.forwarded = forwarded
    }
}

/// An MCP request as the pipeline hands it to its transport: the request, what the stages
/// established (route, verified caller, parsed call) no longer optional, and the connection.
package struct MCPExchange: Sendable {
    package let request: Request
    package let context: TransportContext
    package let route: any TransportRoute
    /// The verified caller on protected routers; nil on `auth: none` ones.
    package let caller: VerifiedCaller?
    package let call: MCPCall
    /// A group's client session this request is made for (see `memberScope` in the pipeline's
    /// context): sessions the transport keeps per caller are kept per caller and scope.
    package var memberScope: String?

    package init(request: Request, context: TransportContext, route: any TransportRoute, caller: VerifiedCaller?, call: MCPCall) {
        self.request = request
        self.context = context
        self.route = route
        self.caller = caller
        self.call = call
    }

    /// The key of the caller's sessions kept by a transport, scoped to a group's client session.
    package func scopedKey(_ key: String) -> String {
        memberScope.map { key + "\u{0}group-session:" + $0 } ?? key
    }

    /// Who sessions created by this request belong to.
    package var owner: SessionOwner { SessionOwner(route: route, caller: caller) }
}
