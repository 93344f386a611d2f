import GatewayStdio
import GatewayUpstream
import AuthorizationEndpoints
public import Hummingbird
import GatewayAuth
import MCPMessages
import Synchronization
import MCPTransport
public import NIOCore

/// Per-request context: Hummingbird's core context, the client's connection, and what the
/// pipeline's stages establish about the request, each filled by the stage named below (see
/// `GatewayPipeline` for their order). A stage only reads what an earlier stage wrote.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The client's connection: its close cancels work done on the client's behalf.
    public let channel: any Channel

    /// `ClientAddressing`: the client's IP address as text, without port: the peer's, or, behind a
    /// trusted proxy of the entry point, the right-most untrusted `X-Forwarded-For` address.
    var clientIP: String?
    /// `ClientAddressing`: how the client reached the gateway, for `X-Forwarded-Proto` upstream:
    /// the public URL's scheme, or what a trusted proxy in front says.
    var forwardedProto = "http"
    /// `ClientAddressing` ran: `clientIP` and `forwardedProto` are the client's (kept by
    /// `forInnerRequest`).
    var clientAddressed = false
    /// `ClientAddressing`: the configuration in force when the request arrived; the request keeps
    /// it to the end, whatever a reload swaps in meanwhile.
    var runtime: RuntimeConfiguration?
    /// `RouteMatching`: the router (and its compiled upstream) whose MCP endpoint this is. Once it
    /// is set, errors are answered as JSON-RPC error objects.
    var route: CompiledRoute?
    /// `RouteMatching`: the host the request names (its authority without port), as routing read it.
    var host = ""
    /// `RouteMatching`: set when the request is for the router's 2024-11-05 HTTP+SSE endpoints
    /// rather than its MCP endpoint.
    var legacyEndpoint: LegacySSEEndpoint?
    /// `ClusterHops`: forwarded between the instances of the cluster as often as it may be: served
    /// here, never forwarded again.
    var atHopLimit = false
    /// `ClusterHops`: how many instances forwarded the request (0: it came from the client).
    var hopCount = 0
    /// `ClusterHops`: the caller was verified by the instance that forwarded the request.
    var credentialsVerifiedByHop = false
    /// `Authentication`: who the verified access token belongs to (protected routers only).
    var caller: VerifiedCaller?
    /// `MCPCallParsing`: the MCP call, body read and parsed once.
    var call: MCPCall?
    /// Set by a group for its members' requests on behalf of a session-based client's session:
    /// the members keep a session of their own (a stdio child, an upstream session) per client
    /// session, opened at its first request and ended with the client's session.
    var memberScope: String?
    /// What the access log (and later stages) report of the request, filled as stages learn it.
    /// A reference: every stage's copy of the context shares it with the pipeline's outer end.
    /// Nil when neither the access log nor the audit log is on: nothing is recorded then.
    var record: RequestRecord?

    /// This context as a request the gateway makes on the same client's behalf (a legacy SSE
    /// session's messages) starts it: the connection, client address and scheme stay, what the
    /// other stages established about the earlier request does not.
    func forInnerRequest() -> GatewayRequestContext {
        var inner = self
        inner.route = nil
        inner.legacyEndpoint = nil
        inner.caller = nil
        inner.call = nil
        inner.record = nil
        inner.atHopLimit = false
        inner.hopCount = 0
        inner.credentialsVerifiedByHop = false
        inner.host = ""
        return inner
    }

    public init(source: ApplicationRequestContextSource) {
        let remoteAddress = source.channel.remoteAddress
        self.init(source: source, peer: Peer(address: remoteAddress, ip: remoteAddress?.ipAddress))
    }

    /// The connection's peer, as a connection handler that serves many requests keeps it: the
    /// address as text costs an `inet_ntop` each time it is made.
    struct Peer {
        let address: SocketAddress?
        let ip: String?

        init(address: SocketAddress?, ip: String?) {
            self.address = address
            self.ip = ip
        }

        init(of channel: any Channel) {
            let address = channel.remoteAddress
            self.init(address: address, ip: address?.ipAddress)
        }
    }

    init(source: ApplicationRequestContextSource, peer: Peer) {
        self.coreContext = .init(source: source)
        self.remoteAddress = peer.address
        self.channel = source.channel
        self.clientIP = peer.ip
    }
}

/// The request as the access log reports it. Written by the stages in turn (one at a time) and
/// read by the pipeline when the response head is ready.
final class RequestRecord: Sendable {
    struct Fields {
        var router: String?
        var user: String?
        var mcpMethod: String?
        var tool: String?
        /// `RouteMatching`: the route, for the audit record's service and transport.
        var route: CompiledRoute?
        /// `Authentication`: the verified caller.
        var caller: VerifiedCaller?
        /// `MCPCallParsing`: the parsed call.
        var call: MCPCall?
        /// The request's trace (`tracing:`), for the audit record.
        var traceID: String?
        /// Forwarded by another instance, which audits and counts it: not again here.
        var hopped = false
    }

    private let fields = Mutex(Fields())

    func update(_ change: (inout Fields) -> Void) { fields.withLock { change(&$0) } }
    var current: Fields { fields.withLock { $0 } }
}

extension GatewayRequestContext: RouteAwareContext {
    package var routeMatched: Bool { route != nil }

    /// What the transport needs of the context.
    var transport: TransportContext {
        TransportContext(channel: channel, logger: logger, clientIP: clientIP, forwardedProto: forwardedProto, atHopLimit: atHopLimit, forwarded: hopCount > 0)
    }
}

extension GatewayRequestContext: AuthorizationRequestContext {
    func cancellingOnClose<Value: Sendable>(_ operation: @escaping @Sendable () async throws -> Value) async throws -> Value {
        try await HTTPProxy.cancellingOnClose(of: channel, operation)
    }
}
