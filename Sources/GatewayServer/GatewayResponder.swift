import GatewayStdio
import Foundation
import GatewayConfig
import GatewayStore
import GatewayRouting
import GatewayUpstream
import HTTPTypes
import Hummingbird
import Logging

/// The gateway's request handler for one entry point: health endpoints, then routing by the
/// configuration in force, then the checks every MCP endpoint gets, then the upstream.
struct GatewayResponder: HTTPResponder {
    typealias Context = GatewayRequestContext

    let entryPoint: EntryPoint
    let holder: ConfigurationHolder
    let proxy: HTTPProxy
    let stdio: StdioBridge
    let registration: RegistrationEndpoints
    let oauth: OAuthEndpoints
    let gate: ResourceGate
    let modernHTTP: ModernHTTPTranslator
    /// Checked by /readyz; nil when state lives in memory.
    let store: (any KeyValueStore)?

    func respond(to request: Request, context: GatewayRequestContext) async throws -> Response {
        // The configuration in force when the request arrived: it keeps it to the end.
        let runtime = holder.current
        var context = context
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
        switch request.uri.path {
        case "/healthz":
            return JSONResponse.make(status: .ok, object: ["status": "ok"], headers: [.cacheControl: "no-store"])
        case "/readyz":
            return await readiness()
        default:
            break
        }
        if let response = await registration.respond(to: request, context: context) {
            return response
        }
        if let response = await oauth.respond(to: request, context: context) {
            return response
        }
        if request.uri.path == "/verify" {
            return await forwardAuth(request, runtime: runtime)
        }
        if request.uri.path.hasPrefix("/.well-known/oauth-protected-resource") {
            return protectedResourceMetadata(request, runtime: runtime)
        }
        let incoming: IncomingRequest
        let matched: RouteTable<CompiledRoute>.Entry?
        do {
            incoming = try IncomingRequest(request)
            matched = try incoming.route(in: runtime.routeTable(entryPoint: entryPoint.name))
        } catch {
            return GatewayError.ambiguousPath(detail: error.detail).response(jsonRPC: false)
        }
        guard let route = matched?.target else {
            return GatewayError.noRoute(host: incoming.host, path: incoming.path).response(jsonRPC: false)
        }
        let mcpPath = route.router.mcpPath
        guard incoming.path == mcpPath || incoming.path == mcpPath + "/" else {
            return GatewayError.notMCPEndpoint(router: route.router.name, mcpPath: mcpPath).response(jsonRPC: false)
        }
        do {
            let hosts = runtime.allowedHosts(entryPoint: entryPoint.name)
            // A router whose rule requires a HostRegexp matched this host by that pattern.
            guard hosts.admits(incoming.host) || route.router.rule.requiresHostPattern else {
                throw GatewayError.hostNotAllowed(host: incoming.host)
            }
            try checkOrigin(request, publicURL: runtime.configuration.publicURL, hosts: hosts)
            guard [.post, .get, .delete].contains(request.method) else {
                throw GatewayError.methodNotAllowed(method: request.method.rawValue)
            }
            var caller: VerifiedCaller?
            if route.router.auth == .oauth {
                switch await gate.check(request, route: route) {
                case .success(let verified): caller = verified
                case .failure(let failure): return gate.response(for: failure, router: route.router)
                }
            }
            switch route.upstream {
            case .http(let upstream):
                if ModernProtocol.isModern(request) {
                    if await modernHTTP.era(of: upstream, logger: context.logger) == .legacy {
                        return try await modernHTTP.handle(request, context: context, route: route, upstream: upstream, caller: caller)
                    }
                } else if modernHTTP.isBridged(request) {
                    return try await modernHTTP.bridge(request, context: context, route: route, upstream: upstream, caller: caller)
                } else if request.method == .post, request.headers[StdioBridge.sessionHeader] == nil {
                    // Possibly a session-based client starting a session: if the upstream refuses
                    // initialize as a 2026-07-28-only server, the gateway bridges.
                    return try await modernHTTP.legacyInitialize(request, context: context, route: route, upstream: upstream, caller: caller, proxy: proxy)
                }
                return try await proxy.forward(request, context: context, route: route, upstream: upstream, caller: caller)
            case .stdio(let manager):
                return try await stdio.handle(request, context: context, route: route, manager: manager, verified: caller)
            }
        } catch let error as GatewayError {
            if case .upstream(let upstreamError) = error {
                context.logger.warning("upstream request failed", metadata: [
                    "router": "\(route.router.name)", "service": "\(upstreamError.service)", "reason": "\(error.reason)",
                    "detail": "\(upstreamError.detail)",
                ])
            }
            if case .stdioStartFailed = error {
                context.logger.error("stdio service failed to start", metadata: ["router": "\(route.router.name)", "detail": "\(error.message)"])
            }
            return error.response(jsonRPC: true)
        }
    }

    /// MCP transports MUST validate Origin to stop DNS rebinding: a present Origin must be the
    /// gateway's public origin, an explicitly allowed one, or name a host this entry point serves
    /// (never merely the Host the request was sent to: a rebinding page has exactly that pair).
    private func checkOrigin(_ request: Request, publicURL: PublicURL, hosts: HostAllowList) throws(GatewayError) {
        guard let origin = request.headers[.origin] else { return }
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

    /// Forward auth for a proxy in front (Traefik `forwardAuth`, nginx `auth_request`, Caddy
    /// `forward_auth`): decides from `X-Forwarded-Method/Proto/Host/Uri` which router applies, then
    /// answers 200 with identity headers, or the same 401/403 challenge a direct request would get.
    private func forwardAuth(_ request: Request, runtime: RuntimeConfiguration) async -> Response {
        let forwarded: IncomingRequest
        let matched: RouteTable<CompiledRoute>.Entry?
        do {
            forwarded = try IncomingRequest(forwardedBy: request)
            matched = try forwarded.route(in: runtime.routeTable(entryPoint: entryPoint.name))
        } catch {
            // Deny: a request whose path can be read two ways is not let through.
            return OAuthResponses.error(.badRequest, "invalid_request", error.detail)
        }
        guard let route = matched?.target else {
            // Deny by default: a request no router claims is not let through.
            return OAuthResponses.error(.forbidden, "no_route", "no router matches \(forwarded.host)\(forwarded.path)")
        }
        // The same host and Origin rules as a request made to the gateway directly.
        let hosts = runtime.allowedHosts(entryPoint: entryPoint.name)
        guard hosts.admits(forwarded.host) || route.router.rule.requiresHostPattern else {
            return OAuthResponses.error(.forbidden, "host_not_allowed", GatewayError.hostNotAllowed(host: forwarded.host).message)
        }
        do {
            try checkOrigin(request, publicURL: runtime.configuration.publicURL, hosts: hosts)
        } catch {
            return OAuthResponses.error(.forbidden, "origin_forbidden", error.message)
        }
        guard route.router.auth == .oauth else {
            return Response(status: .ok, headers: [.cacheControl: "no-store"])
        }
        switch await gate.check(request, route: route) {
        case .success(let caller):
            var headers: HTTPFields = [.cacheControl: "no-store"]
            for (name, value) in IdentityHeaders.fields(caller, names: route.router.identityHeaders) {
                if let fieldName = HTTPField.Name(name) { headers[fieldName] = value }
            }
            return Response(status: .ok, headers: headers)
        case .failure(let failure):
            return gate.response(for: failure, router: route.router)
        }
    }

    /// RFC 9728 metadata of a protected router: path-inserted (`/.well-known/oauth-protected-resource/time/mcp`),
    /// and at the root for a router reached by its own host.
    private func protectedResourceMetadata(_ request: Request, runtime: RuntimeConfiguration) -> Response {
        let suffix = String(request.uri.path.dropFirst("/.well-known/oauth-protected-resource".count))
        let host = IncomingRequest.hostWithoutPort(request.head.authority ?? "")
        let publicURL = runtime.configuration.publicURL
        let candidates = runtime.configuration.routers.filter { $0.auth == .oauth }
        let match = candidates.first { router in
            guard let components = URLComponents(string: router.resourceURL(publicURL: publicURL)) else { return false }
            let hostMatches = components.host?.lowercased() == host.lowercased() || components.host?.lowercased() == publicURL.host.lowercased()
            if suffix.isEmpty || suffix == "/" {
                return components.host?.lowercased() == host.lowercased() && components.host?.lowercased() != publicURL.host.lowercased()
            }
            return hostMatches && (components.path == suffix || components.path + "/" == suffix)
        }
        guard let router = match else {
            return JSONResponse.make(status: .notFound, object: ["error": "not_found", "error_description": "no protected MCP endpoint here"], headers: [.cacheControl: "no-store"])
        }
        return OAuthResponses.json(.ok, gate.protectedResourceMetadata(router), cache: "public, max-age=300")
    }

    private func readiness() async -> Response {
        let runtime = holder.current
        var storeStatus = "memory"
        if let store {
            do {
                try await store.ping()
                storeStatus = "reachable"
            } catch {
                return JSONResponse.make(
                    status: .serviceUnavailable,
                    object: ["status": "not_ready", "store": "unreachable", "detail": error.description],
                    headers: [.cacheControl: "no-store"]
                )
            }
        }
        var stdioServices: [String: [String: Int]] = [:]
        for manager in stdio.registry.allManagers {
            var entry = stdioServices[manager.service.name] ?? ["sessions": 0, "spares": 0]
            entry["sessions", default: 0] += manager.sessionCount
            entry["spares", default: 0] += manager.spareCount
            stdioServices[manager.service.name] = entry
        }
        let body: [String: Any] = [
            "status": "ready",
            "configGeneration": runtime.generation,
            "rejectedReloads": holder.rejectedReloads,
            "routers": runtime.configuration.routers.count,
            "stdio": stdioServices,
            "store": storeStatus,
        ]
        return JSONResponse.make(status: .ok, object: body, headers: [.cacheControl: "no-store"])
    }
}
