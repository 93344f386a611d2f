public import Hummingbird
public import NIOCore

/// Per-request context: Hummingbird's core context plus the peer address for X-Forwarded-For.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The client's connection: its close cancels work done on the client's behalf.
    public let channel: any Channel

    /// The client's IP address as text, without port: the peer's, or, behind a trusted proxy of
    /// the entry point, the right-most untrusted `X-Forwarded-For` address (set by the responder).
    var clientIP: String?
    /// How the client reached the gateway, for `X-Forwarded-Proto` upstream: the public URL's
    /// scheme, or what a trusted proxy in front says (set by the responder).
    var forwardedProto = "http"

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.channel = source.channel
        self.clientIP = source.channel.remoteAddress?.ipAddress
    }
}
