import AuthorizationEndpoints
import AuthorizationServer
import Foundation
import GatewayAudit
import GatewayAuth
import GatewayConfig
import GatewayConnections
import GatewayPages
import GatewayStore
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The pages where users connect their own accounts of OAuth-protected upstreams:
/// `/connect/<service>` (sign in to the gateway if needed, then the upstream's authorization),
/// `/connect/callback` (the upstream's code redeemed, the tokens sealed in the store),
/// `/connections` (what is connected, with disconnect buttons), and the gateway's Client ID
/// Metadata Document. Sign-in is the gateway's own, as for `/admin`: a built-in client whose
/// resource is `<publicURL>/connections`; a session cookie (HttpOnly, SameSite=Lax so that the
/// upstream's redirect back carries it, `__Host-` over https) stands for the user for an hour.
///
/// The upstream's `state` is bound to the signed-in user: a callback opened in another user's
/// browser (a planted code) is refused, and a code never lands under another user's name.
struct ConnectionsPage: Sendable {
    let oauth: OAuthEndpoints
    let connections: UpstreamConnections
    let store: any KeyValueStore
    let holder: ConfigurationHolder

    static let flowLifetime: Duration = .seconds(600)

    private var signIn: PageSignIn {
        PageSignIn(
            oauth: oauth, store: store, clientID: OAuthEndpoints.connectionsClientID, resource: oauth.connectionsResource, callbackPath: "/connections/callback",
            cookieName: "mcpgw-connections", sameSite: "Lax", storePrefix: "connections-session", secure: holder.current.configuration.publicURL.scheme == "https"
        )
    }

    /// The state of one connection under way (kept in the store until the upstream calls back).
    struct Flow: Codable {
        let subject: String
        let login: String
        let service: String
        let verifier: String
        let clientID: String
        let issuer: String
    }

    func respond(to request: Request, context: GatewayRequestContext) async -> Response? {
        let path = request.uri.path
        guard path == "/connections" || path.hasPrefix("/connections/") || path.hasPrefix("/connect/") || path == Self.documentPath else { return nil }
        let configuration = holder.current.configuration
        guard OAuthEndpoints.hasConnections(configuration) else { return nil }
        do {
            switch (request.method, path) {
            case (.get, Self.documentPath):
                return OAuthResponses.json(.ok, UpstreamOAuthClient.metadataDocument(publicURL: configuration.publicURL), cache: "public, max-age=3600")
            case (.get, "/connections"):
                guard let session = try await signIn.session(of: request) else { return signIn.start(returnTo: "/connections") }
                return try await overview(session, done: FormFields(query: request)["done"])
            case (.get, "/connections/callback"):
                return try await signIn.finish(request, fallback: "/connections", again: "open the link again") { target in
                    target == "/connections" || (target.hasPrefix("/connect/") && !target.dropFirst("/connect/".count).contains("/"))
                }.response
            case (.post, "/connections/disconnect"):
                return try await disconnect(request)
            case (.get, "/connect/callback"):
                return try await finishConnection(request)
            case (.get, _) where path.hasPrefix("/connect/"):
                let service = String(path.dropFirst("/connect/".count))
                guard case .http(let http)? = configuration.services[service], let settings = http.oauth else {
                    return AuthPages.error(.notFound, title: "Not found", message: "No service here is connected per user under that name.")
                }
                guard let session = try await signIn.session(of: request) else { return signIn.start(returnTo: "/connect/" + service) }
                return try await startConnection(session, service: http, settings: settings)
            default:
                return AuthPages.error(.notFound, title: "Not found", message: "There is no such page.")
            }
        } catch {
            return AuthPages.error(.serviceUnavailable, title: "Store unavailable", message: "The gateway's store cannot be reached; try again shortly.")
        }
    }

    static let documentPath = "/.well-known/mcp-gateway-client.json"

    // MARK: connecting

    private func startConnection(_ session: PageSession, service: HTTPServiceConfiguration, settings: UpstreamOAuthSettings) async throws -> Response {
        if settings.provider == .github {
            // The token comes from the gateway's own GitHub sign-in, which asks GitHub for this
            // service's scopes too: a fresh sign-in (choosing GitHub) keeps it.
            return signIn.start(returnTo: "/connections")
        }
        let publicURL = holder.current.configuration.publicURL
        let discovery: UpstreamOAuthClient.Discovery
        let client: UpstreamOAuthClient.ClientIdentity
        do {
            discovery = try await connections.client.discover(service)
            client = try await connections.client.client(for: discovery, settings: settings, publicURL: publicURL)
        } catch {
            connections.logger.warning("cannot start an upstream connection", metadata: ["service": "\(service.name)", "detail": "\(error.description)"])
            return AuthPages.error(.badGateway, title: "\(service.name) cannot be connected now", message: "The gateway could not reach \(service.name)'s authorization server (\(error.description)). Try again later.")
        }
        let verifier = ClientRegistry.randomToken(bytes: 32)
        let state = ClientRegistry.randomToken(bytes: 24)
        let flow = Flow(subject: session.user.subject, login: session.user.login, service: service.name, verifier: verifier, clientID: client.clientID, issuer: discovery.issuer)
        // Sealed like the tokens: the PKCE verifier and who is connecting are nobody's to read in the store.
        let flowKey = "connect-flow:\(ClientRegistry.hash(state))"
        guard let keys = holder.current.configuration.storeKeys, let sealed = try? SecretSealer(keys: keys).seal(Array(JSONEncoder().encode(flow)), context: flowKey) else {
            return AuthPages.error(.serviceUnavailable, title: "Cannot connect now", message: "The gateway has no store.encryptionKey to keep the connection with.")
        }
        try await store.set(flowKey, Array(sealed.utf8), ttl: Self.flowLifetime)
        let url = connections.client.authorizationURL(discovery: discovery, client: client, settings: settings, publicURL: publicURL, state: state, verifier: verifier)
        return PageSignIn.redirect(url, cookies: [])
    }

    private func finishConnection(_ request: Request) async throws -> Response {
        let query = FormFields(query: request)
        let flowKey = "connect-flow:\(ClientRegistry.hash(query["state"] ?? ""))"
        guard query["state"] != nil, let bytes = try await store.take(flowKey), let keys = holder.current.configuration.storeKeys,
              let plain = try? SecretSealer(keys: keys).open(String(decoding: bytes, as: UTF8.self), context: flowKey),
              let flow = try? JSONDecoder().decode(Flow.self, from: Data(plain))
        else {
            return AuthPages.error(.badRequest, title: "Connection failed", message: "This connection link has expired or was already used; start again from your MCP client.")
        }
        // The browser that comes back is the one that started: same signed-in user.
        guard let session = try await signIn.session(of: request), session.user.subject == flow.subject else {
            return AuthPages.error(.forbidden, title: "Connection refused", message: "This connection was started by another signed-in user or browser; start again from your MCP client.")
        }
        if let error = query["error"] {
            return AuthPages.error(.badRequest, title: "Not connected", message: "\(flow.service) did not grant access (\(error)).", returnURL: "/connections")
        }
        guard let code = query["code"] else {
            return AuthPages.error(.badRequest, title: "Connection failed", message: "\(flow.service)'s answer had no code.")
        }
        let configuration = holder.current.configuration
        guard case .http(let service)? = configuration.services[flow.service], let settings = service.oauth else {
            return AuthPages.error(.notFound, title: "Not found", message: "That service is no longer configured.")
        }
        let publicURL = configuration.publicURL
        var grant: UpstreamGrant
        do {
            let discovery = try await connections.client.discover(service)
            // RFC 9207: an answer naming another issuer is a mix-up.
            if let issuer = query["iss"], UpstreamOAuthClient.trimmedIssuer(issuer) != UpstreamOAuthClient.trimmedIssuer(flow.issuer) {
                return AuthPages.error(.badRequest, title: "Connection refused", message: "The answer came from another authorization server than the one asked.")
            }
            let client = try await connections.client.client(for: discovery, settings: settings, publicURL: publicURL)
            guard client.clientID == flow.clientID else {
                return AuthPages.error(.badRequest, title: "Connection failed", message: "The gateway's registration changed meanwhile; start again.")
            }
            grant = try await connections.client.exchange(code: code, verifier: flow.verifier, discovery: discovery, client: client, publicURL: publicURL)
        } catch {
            connections.logger.warning("an upstream code exchange failed", metadata: ["service": "\(flow.service)", "detail": "\(error.description)"])
            return AuthPages.error(.badGateway, title: "Connection failed", message: "\(flow.service)'s authorization server refused the code (\(error.description)); start again.")
        }
        grant.login = flow.login
        do { try await connections.vault.save(grant, subject: flow.subject, service: flow.service) } catch {
            return AuthPages.error(.serviceUnavailable, title: "Connection not saved", message: "The gateway could not store the connection (\(error)); try again.")
        }
        connections.logger.info("upstream connected", metadata: ["service": "\(flow.service)", "login": "\(flow.login)"])
        connections.audit?.record(AuditEvent("connection.created", [("service", .string(flow.service)), ("user", .string(flow.login)), ("subject", .string(flow.subject))]))
        return AuthPages.response(.ok, html: Pages.render("connected", ["title": "Connected", "service": flow.service, "login": flow.login]))
    }

    // MARK: the overview

    private func overview(_ session: PageSession, done: String?) async throws -> Response {
        let configuration = holder.current.configuration
        var services: [[String: Any]] = []
        for (name, service) in configuration.services.sorted(by: { $0.key < $1.key }) {
            guard case .http(let http) = service, http.oauth != nil else { continue }
            let grant = try? await connections.vault.grant(subject: session.user.subject, service: name)
            var entry: [String: Any] = ["name": name, "csrf": session.csrf]
            if let grant = grant ?? nil {
                entry["connected"] = true
                entry["since"] = "since " + ISO8601DateFormatter().string(from: grant.connectedAt)
            }
            services.append(entry)
        }
        var context: [String: Any] = ["title": "Your connections", "login": session.user.login, "services": services]
        if let done { context["done"] = done == "disconnected" ? "Disconnected." : "Done." }
        return AuthPages.response(.ok, html: Pages.render("connections", context), extraHeaders: [HTTPField.Name("Referrer-Policy")!: "same-origin"])
    }

    private func disconnect(_ request: Request) async throws -> Response {
        var request = request
        guard let session = try await signIn.session(of: request) else {
            return AuthPages.error(.forbidden, title: "Not signed in", message: "Open /connections and sign in again.")
        }
        if signIn.isFromAnotherSite(request) {
            return AuthPages.error(.forbidden, title: "Refused", message: "The form came from another site.")
        }
        guard let form = await FormFields.body(&request), PageSignIn.same(form["csrf"], session.csrf), let service = form["service"] else {
            return AuthPages.error(.forbidden, title: "Refused", message: "The form has expired; reload the page.")
        }
        let removed: UpstreamGrant?
        do { removed = try await connections.vault.remove(subject: session.user.subject, service: service) } catch {
            return AuthPages.error(.serviceUnavailable, title: "Store unavailable", message: "The connection could not be removed; try again.")
        }
        if let removed, let settings = UpstreamConnections.settings(of: service, in: holder), settings.provider == .mcp {
            let secret = await connections.client.clientSecret(for: removed, settings: settings, publicURL: holder.current.configuration.publicURL)
            await connections.client.revoke(removed, clientSecret: secret)
        }
        connections.audit?.record(AuditEvent("connection.ended", [
            ("service", .string(service)), ("user", .string(session.user.login)), ("subject", .string(session.user.subject)), ("reason", .string("disconnected")),
        ]))
        return PageSignIn.redirect("/connections?done=disconnected", cookies: [])
    }
}
