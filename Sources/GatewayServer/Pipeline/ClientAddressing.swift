import GatewayStdio
import GatewayUpstream
import MCPTransport
import GatewayAuth
import Foundation
import GatewayConfig
import HTTPTypes
import Hummingbird

/// Stage 1: the configuration in force (kept by the request to its end), and who the client is
/// when trusted proxies stand in front: its address (`X-Forwarded-For`) and scheme
/// (`X-Forwarded-Proto`), believed only from a peer in the entry point's `trustedProxies`.
struct ClientAddressing {
    let entryPoint: EntryPoint
    let holder: ConfigurationHolder

    func apply(_ request: Request, _ context: inout GatewayRequestContext) {
        let runtime = holder.current
        context.runtime = runtime
        // A request the gateway makes on a client's behalf (a legacy SSE or WebSocket session's
        // messages) keeps what its client's own request established: the peer it sees is the
        // client already resolved, so the proxy's word would no longer be believed.
        guard !context.clientAddressed else { return }
        context.clientAddressed = true
        context.forwardedProto = runtime.configuration.publicURL.scheme
        if !entryPoint.trustedProxies.isEmpty {
            if ClientAddress.isTrusted(context.clientIP, entryPoint.trustedProxies),
               let proto = request.headers[ClientAddress.forwardedProto]?.split(separator: ",").last?.trimmingCharacters(in: .whitespaces).lowercased(),
               proto == "http" || proto == "https"
            {
                context.forwardedProto = proto
            }
            context.clientIP = ClientAddress.resolve(peer: context.clientIP, forwardedFor: request.headers[values: ClientAddress.forwardedFor], trusted: entryPoint.trustedProxies)
        }
    }
}
