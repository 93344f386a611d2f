import GatewayStdio
import GatewayUpstream
import MCPTransport
import GatewayRouting
import Foundation
import GatewayConfig
import HTTPTypes
import Hummingbird

/// Stage 4: what every MCP endpoint requires before anyone is authenticated: a Host this entry
/// point serves, an acceptable Origin (DNS rebinding), and one of the transport's methods.
struct RequestChecks {
    let entryPoint: EntryPoint

    func apply(_ request: Request, _ context: GatewayRequestContext) throws(GatewayError) {
        guard let runtime = context.runtime, let route = context.route else { throw .pipelineOrder(stage: "RequestChecks") }
        let host = context.host
        let hosts = runtime.allowedHosts(entryPoint: entryPoint.name)
        // A router whose rule requires a HostRegexp matched this host by that pattern.
        guard hosts.admits(host) || route.router.rule.requiresHostPattern else {
            throw .hostNotAllowed(host: host)
        }
        try Self.checkOrigin(request, publicURL: runtime.configuration.publicURL, entryPoint: entryPoint, hosts: hosts)
        guard [.post, .get, .delete].contains(request.method) else {
            throw .methodNotAllowed(method: request.method.rawValue)
        }
    }

    /// MCP transports MUST validate Origin to stop DNS rebinding: a present Origin must be the
    /// gateway's public origin, an explicitly allowed one, or name a host this entry point serves
    /// (never merely the Host the request was sent to: a rebinding page has exactly that pair).
    static func checkOrigin(_ request: Request, publicURL: PublicURL, entryPoint: EntryPoint, hosts: HostAllowList) throws(GatewayError) {
        guard let origin = request.headers.value(of: .origin) else { return }
        let normalized = origin.lowercased()
        if normalized == publicURL.origin.lowercased() { return }
        if entryPoint.allowedOrigins.contains(normalized) { return }
        if let components = URLComponents(string: normalized), components.scheme == "http" || components.scheme == "https",
           let host = components.host, components.path.isEmpty, hosts.admits(host.contains(":") ? "[\(host)]" : host) || hosts.admits(host)
        {
            return
        }
        throw .originForbidden(origin: origin)
    }
}
