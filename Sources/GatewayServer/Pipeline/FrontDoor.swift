import GatewayUpstream
import MCPTransport
import AuthorizationEndpoints
import GatewayAuth
import GatewayStdio
import Foundation
import GatewayConfig
import GatewayConnections
import GatewayRouting
import GatewayStore
import HTTPTypes
import Hummingbird

/// Stage 2: what the gateway answers itself before any router is looked at: health and
/// readiness, the authorization server's endpoints (registration, OAuth, sign-in pages), forward
/// auth for a proxy in front (`/verify`), RFC 9728 protected-resource metadata, and `/` on the
/// gateway's own host (the MCP URLs it serves).
struct FrontDoor {
    let entryPoint: EntryPoint
    let holder: ConfigurationHolder
    let registration: RegistrationEndpoints
    let oauth: OAuthEndpoints
    let gate: ResourceGate
    let stdio: StdioBridge
    /// Checked by /readyz; nil when state lives in memory.
    let store: (any KeyValueStore)?
    /// `metrics.prometheus`; nil when metrics are off.
    let metrics: MetricsEndpoint?
    /// `/admin` (answers only when `admin:` is set).
    let admin: AdminPage
    /// `/connect/<service>`, `/connections` and the gateway's client metadata document (answers
    /// only when a service uses `oauth`).
    let connectionsPage: ConnectionsPage
    /// Groups of services, for /readyz.
    var groups: GroupServer? = nil

    /// Whether `answer` might answer a request for `path` (any method): the paths the gateway
    /// serves itself. The fast relay takes only requests for other paths. Kept with `answer`:
    /// a path served here must be covered.
    static func mayAnswer(path: String) -> Bool {
        if path == "/" || path.contains("/.well-known/") { return true }
        switch path {
        case "/healthz", "/readyz", "/verify", "/jwks.json", "/authorize", "/token", "/revoke", "/introspect", "/register", "/admin", "/connections":
            return true
        default:
            break
        }
        for prefix in ["/authorize/", "/oauth/", "/register/", "/admin/", "/connections/", "/connect/"] where path.hasPrefix(prefix) {
            return true
        }
        // `metrics.prometheus.path` answers GET only; the fast relay carries POST.
        return false
    }

    /// The gateway's own answer, or nil for a request that goes on to routing.
    func answer(_ request: Request, context: GatewayRequestContext) async throws(GatewayError) -> Response? {
        switch request.uri.path {
        case "/healthz":
            return JSONResponse.make(status: .ok, object: ["status": "ok"], headers: [.cacheControl: "no-store"])
        case "/readyz":
            return await readiness()
        default:
            break
        }
        if let metrics, metrics.serves(request, clientIP: context.clientIP) {
            return await metrics.respond()
        }
        if let response = await admin.respond(to: request, context: context) {
            return response
        }
        if let response = await connectionsPage.respond(to: request, context: context) {
            return response
        }
        if let response = await registration.respond(to: request, context: context) {
            return response
        }
        if let response = await oauth.respond(to: request, context: context) {
            return response
        }
        guard let runtime = context.runtime else { throw .pipelineOrder(stage: "FrontDoor") }
        if request.uri.path == "/verify" {
            return await forwardAuth(request, runtime: runtime)
        }
        if request.uri.path.hasPrefix(Self.resourceMetadataPath) {
            return protectedResourceMetadata(request, runtime: runtime, resourcePath: String(request.uri.path.dropFirst(Self.resourceMetadataPath.count)))
        }
        // The appended form some clients build (`/time/mcp/.well-known/oauth-protected-resource`).
        if request.uri.path.hasSuffix(Self.resourceMetadataPath), request.method == .get || request.method == .head {
            return protectedResourceMetadata(request, runtime: runtime, resourcePath: String(request.uri.path.dropLast(Self.resourceMetadataPath.count)))
        }
        if request.uri.path == "/", request.method == .get || request.method == .head,
           WelcomePage.isGatewayHost(IncomingRequest.hostWithoutPort(request.head.authority ?? ""), publicURL: runtime.configuration.publicURL)
        {
            return WelcomePage.response(to: request, configuration: runtime.configuration)
        }
        return nil
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
            return GatewayError.oauth(status: .badRequest, code: "invalid_request", description: error.detail).response(form: .oauth)
        }
        guard let route = matched?.target else {
            // Deny by default: a request no router claims is not let through.
            return GatewayError.oauth(status: .forbidden, code: "no_route", description: "no router matches \(forwarded.host)\(forwarded.path)").response(form: .oauth)
        }
        // The same host and Origin rules as a request made to the gateway directly.
        let hosts = runtime.allowedHosts(entryPoint: entryPoint.name)
        guard hosts.admits(forwarded.host) || route.router.rule.requiresHostPattern else {
            return GatewayError.oauth(status: .forbidden, code: "host_not_allowed", description: GatewayError.hostNotAllowed(host: forwarded.host).message).response(form: .oauth)
        }
        do {
            try RequestChecks.checkOrigin(request, publicURL: runtime.configuration.publicURL, entryPoint: entryPoint, hosts: hosts)
        } catch {
            return GatewayError.oauth(status: .forbidden, code: "origin_forbidden", description: error.message).response(form: .oauth)
        }
        guard route.router.auth == .oauth else {
            return Response(status: .ok, headers: [.cacheControl: "no-store"])
        }
        switch await gate.check(request.headers, route: route) {
        case .success(let caller):
            var headers: HTTPFields = [.cacheControl: "no-store"]
            for (name, value) in IdentityHeaders.fields(caller, names: route.router.identityHeaders) {
                if let fieldName = HTTPField.Name(name) { headers[fieldName] = value }
            }
            return Response(status: .ok, headers: headers)
        case .failure(let failure):
            return GatewayError.oauth(gate.refusal(failure, router: route.router)).response(form: .oauth)
        }
    }

    static let resourceMetadataPath = "/.well-known/oauth-protected-resource"

    /// RFC 9728 metadata of a protected router: path-inserted (`/.well-known/oauth-protected-resource/time/mcp`)
    /// or appended; at the root for a router reached by its own host, and for the one router with
    /// a path when there is only one (clients that drop the path: Claude).
    private func protectedResourceMetadata(_ request: Request, runtime: RuntimeConfiguration, resourcePath suffix: String) -> Response {
        let host = IncomingRequest.hostWithoutPort(request.head.authority ?? "")
        let publicURL = runtime.configuration.publicURL
        let candidates = runtime.configuration.routers.filter(\.acceptsOAuth)
        let atRoot = suffix.isEmpty || suffix == "/"
        var match = candidates.first { router in
            guard let components = URLComponents(string: router.resourceURL(publicURL: publicURL)) else { return false }
            let hostMatches = components.host?.lowercased() == host.lowercased() || components.host?.lowercased() == publicURL.host.lowercased()
            if atRoot {
                return components.host?.lowercased() == host.lowercased() && components.host?.lowercased() != publicURL.host.lowercased()
            }
            return hostMatches && (components.path == suffix || components.path + "/" == suffix)
        }
        if match == nil, atRoot, host.lowercased() == publicURL.host.lowercased() {
            let onThisHost = candidates.filter { URLComponents(string: $0.resourceURL(publicURL: publicURL))?.host?.lowercased() == publicURL.host.lowercased() }
            if onThisHost.count == 1 { match = onThisHost.first }
        }
        guard let router = match else {
            return JSONResponse.make(status: .notFound, object: ["error": "not_found", "error_description": "no protected MCP endpoint here"], headers: [.cacheControl: "no-store"])
        }
        return OAuthResponses.json(.ok, gate.protectedResourceMetadata(router), cache: "public, max-age=300")
    }

    private func connectionCounts(_ configuration: GatewayConfiguration) async -> [String: Int] {
        var counts: [String: Int] = [:]
        for (name, service) in configuration.services {
            if case .http(let http) = service, http.oauth != nil { counts[name] = 0 }
        }
        guard !counts.isEmpty, let stored = try? await connectionsPage.connections.vault.connectedCounts() else { return counts }
        for (name, count) in stored where counts[name] != nil { counts[name] = count }
        return counts
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
            // Groups as last listed: members left out (down) and names that clashed.
            "groups": groups?.readiness ?? [:],
            // Per service with `oauth`: how many users are connected (a count, no names).
            "connections": await connectionCounts(runtime.configuration),
        ]
        return JSONResponse.make(status: .ok, object: body, headers: [.cacheControl: "no-store"])
    }
}
