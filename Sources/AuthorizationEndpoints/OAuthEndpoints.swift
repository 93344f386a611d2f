package import GatewayAudit
package import GatewayMetrics
import GatewayAuth
package import AuthorizationServer
import Crypto
import Foundation
package import GatewayConfig
package import GatewayStore
package import HTTPTypes
package import Hummingbird
package import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The authorization server's endpoints: metadata (RFC 8414), JWKS, `/authorize` with consent and
/// sign-in (GitHub or local accounts), `/token`, `/revoke` (RFC 7009) and `/introspect` (RFC 7662).
/// Registration (RFC 7591/7592) lives in `RegistrationEndpoints`.
package struct OAuthEndpoints: Sendable {
    /// The configuration in force (a reload changes which routers exist and who may sign in).
    package let currentConfiguration: @Sendable () -> GatewayConfiguration
    package let publicURL: PublicURL
    package let registry: ClientRegistry
    package let clients: ClientDirectory
    package let codes: AuthorizationCodes
    package let refreshTokens: RefreshTokens
    package let accessTokens: AccessTokens
    package let keys: KeyManager
    package let flows: AuthorizationFlows
    /// The ways to sign in the consent page offers, by their form name (`github`, `local`).
    package let identityProviders: [String: any IdentityProvider]
    package let metadataDocumentsEnabled: Bool
    package let store: any KeyValueStore
    package let logger: Logger
    /// Security events (sign-ins, tokens issued, refreshed and revoked); nil: not recorded.
    package var audit: (any AuditSink)?
    /// `mcp_gateway_tokens_issued_total`; nil when metrics are off.
    package var metrics: GatewayMetrics?
    /// Who signed in and which sign-ins they hold (the admin commands); nil in tests that need none.
    package var users: UserDirectory?
    /// Client ID Metadata Documents, for the keys of `private_key_jwt` clients; nil when off.
    package var documents: ClientMetadataDocuments?

    package init(
        currentConfiguration: @escaping @Sendable () -> GatewayConfiguration, publicURL: PublicURL, registry: ClientRegistry, clients: ClientDirectory,
        codes: AuthorizationCodes, refreshTokens: RefreshTokens, accessTokens: AccessTokens, keys: KeyManager, flows: AuthorizationFlows,
        identityProviders: [any IdentityProvider], metadataDocumentsEnabled: Bool, store: any KeyValueStore,
        logger: Logger
    ) {
        self.currentConfiguration = currentConfiguration
        self.publicURL = publicURL
        self.registry = registry
        self.clients = clients
        self.codes = codes
        self.refreshTokens = refreshTokens
        self.accessTokens = accessTokens
        self.keys = keys
        self.flows = flows
        self.identityProviders = Dictionary(identityProviders.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.metadataDocumentsEnabled = metadataDocumentsEnabled
        self.store = store
        self.logger = logger
    }

    package var issuer: String { publicURL.origin }
    /// Where a redirecting provider sends the browser back to.
    package func callbackURL(for provider: some IdentityProvider) -> String { issuer + "/oauth/\(provider.name)/callback" }
    /// The browser-binding cookie; `__Host-` (host-only, Secure, Path=/) when served over https.
    package var cookieName: String { publicURL.scheme == "https" ? "__Host-mcpgw-browser" : "mcpgw-browser" }

    /// Each sign-in's own binding cookie (named after its secret's hash), so two sign-ins in one
    /// browser do not overwrite each other's now that every sign-in mints a fresh secret.
    package func cookieName(for pending: PendingAuthorization) -> String {
        cookieName + "-" + pending.browserHash.prefix(16)
    }

    /// Whether `path` asks for the authorization server's metadata in one of the forms clients
    /// use: the well-known path itself, with the MCP endpoint's path inserted after it (RFC 8414
    /// §3.1, for an issuer with a path), or appended after that path (Claude drops, inserts and
    /// appends paths). The issuer is the public URL, so every form gets the same document.
    package static func isMetadataPath(_ path: String) -> Bool {
        for name in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
            if path == name || path.hasPrefix(name + "/") || (path.hasSuffix(name) && path.count > name.count) { return true }
        }
        return false
    }

    package func respond(to request: Request, context: some AuthorizationRequestContext) async -> Response? {
        if Self.isMetadataPath(request.uri.path) {
            guard request.method == .get || request.method == .head else { return OAuthResponses.methodNotAllowed("GET") }
            return OAuthResponses.json(.ok, metadata, cache: "public, max-age=300")
        }
        switch request.uri.path {
        case "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration":
            guard request.method == .get || request.method == .head else { return OAuthResponses.methodNotAllowed("GET") }
            return OAuthResponses.json(.ok, metadata, cache: "public, max-age=300")
        case "/jwks.json":
            guard request.method == .get || request.method == .head else { return OAuthResponses.methodNotAllowed("GET") }
            return await jwks()
        case "/authorize":
            guard request.method == .get else { return OAuthResponses.methodNotAllowed("GET") }
            // A browser that goes away cancels what was started for it (a metadata document fetch).
            let endpoints = self
            return (try? await context.cancellingOnClose { await endpoints.authorize(request) })
                ?? AuthPages.error(.badRequest, title: "Request cancelled", message: "The browser closed the connection.")
        case "/authorize/consent":
            guard request.method == .post else { return OAuthResponses.methodNotAllowed("POST") }
            return await consent(request, context: context)
        case let path where path.hasPrefix("/oauth/") && path.hasSuffix("/callback"):
            let name = path.dropFirst("/oauth/".count).dropLast("/callback".count)
            guard let provider = identityProviders[String(name)] as? any RedirectingIdentityProvider else { return nil }
            guard request.method == .get else { return OAuthResponses.methodNotAllowed("GET") }
            return await callback(request, provider: provider)
        case "/token":
            guard request.method == .post else { return OAuthResponses.methodNotAllowed("POST") }
            if let refused = await tokenRateLimited(clientIP: context.clientIP) { return refused }
            return await token(request)
        case "/revoke":
            guard request.method == .post else { return OAuthResponses.methodNotAllowed("POST") }
            return await revoke(request)
        case "/introspect":
            guard request.method == .post else { return OAuthResponses.methodNotAllowed("POST") }
            return await introspect(request)
        default:
            return nil
        }
    }

    // MARK: metadata

    package var metadata: [String: Any] {
        var authMethods = ["none", "client_secret_basic", "client_secret_post"]
        if metadataDocumentsEnabled { authMethods.append("private_key_jwt") }
        var grantTypes = ["authorization_code", "refresh_token"]
        if currentConfiguration().auth?.machineClients.isEmpty == false { grantTypes.append("client_credentials") }
        return [
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "registration_endpoint": issuer + "/register",
            "revocation_endpoint": issuer + "/revoke",
            "introspection_endpoint": issuer + "/introspect",
            "jwks_uri": issuer + "/jwks.json",
            "scopes_supported": Scopes.supported,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": grantTypes,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": authMethods,
            "revocation_endpoint_auth_methods_supported": authMethods,
            "introspection_endpoint_auth_methods_supported": authMethods,
            "token_endpoint_auth_signing_alg_values_supported": JOSEKeys.algorithms.keys.sorted(),
            "client_id_metadata_document_supported": metadataDocumentsEnabled,
            "authorization_response_iss_parameter_supported": true,
        ]
    }

    private func jwks() async -> Response {
        do {
            let ring = try await keys.current()
            return OAuthResponses.json(.ok, ring.jwks, cache: "public, max-age=60")
        } catch {
            return OAuthResponses.error(.serviceUnavailable, "temporarily_unavailable", "the gateway's state store is unavailable; retry shortly")
        }
    }

    // MARK: /authorize

    /// Errors found before the client and redirect URI are known to be genuine are shown to the user
    /// (never redirected: that would make the gateway an open redirector); later ones go back to the
    /// client with `error`, `state` and `iss`.
    private func authorize(_ request: Request) async -> Response {
        let query = FormFields(query: request)
        if let name = query.repeated.first {
            return AuthPages.error(.badRequest, title: "Invalid authorization request", message: "The parameter \(name) appears more than once.")
        }
        guard let clientID = query["client_id"] else {
            return AuthPages.error(.badRequest, title: "Invalid authorization request", message: "The request has no client_id.")
        }
        let client: ResolvedClient
        do {
            guard let found = try await clients.resolve(clientID) else {
                return AuthPages.error(.badRequest, title: "Unknown application", message: "No application is registered as \(clientID). It may have expired; reconnect from the application to register again.")
            }
            client = found
        } catch {
            return clientLookupPage(error)
        }
        let redirectURI: String
        if let presented = query["redirect_uri"] {
            guard ClientMetadataValidator.matches(presented: presented, registered: client.metadata.redirect_uris) else {
                return AuthPages.error(.badRequest, title: "Invalid redirect URI", message: "\(presented) is not a redirect URI registered for \(client.metadata.client_name ?? clientID).")
            }
            redirectURI = presented
        } else if client.metadata.redirect_uris.count == 1 {
            redirectURI = client.metadata.redirect_uris[0]
        } else {
            return AuthPages.error(.badRequest, title: "Invalid authorization request", message: "redirect_uri is required: the application registered several.")
        }
        let state = query["state"]
        // RFC 9700 §4.11.2: anyone can register a client with a redirect URI of their choosing, so
        // an error here is shown, not redirected; otherwise a link to /authorize would send the
        // browser anywhere under this gateway's name. The user may follow the link back.
        func fail(_ code: String, _ description: String) -> Response {
            AuthPages.error(.badRequest, title: "Invalid authorization request", message: "\(description) (\(code))",
                            returnURL: errorRedirect(redirectURI, code, description, state: state))
        }
        guard query["response_type"] == "code" else {
            return fail("unsupported_response_type", "only response_type=code is supported")
        }
        guard let challenge = query["code_challenge"] else {
            return fail("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
        }
        guard query["code_challenge_method"] == "S256" else {
            return fail("invalid_request", "code_challenge_method must be S256 (plain is not accepted)")
        }
        guard PKCE.isValidChallenge(challenge) else {
            return fail("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier (43 characters)")
        }
        guard let resource = canonicalResource(query["resource"]) else {
            return fail("invalid_target", "resource must be one of this gateway's MCP endpoint URLs")
        }
        // The admin page's resource is its own client's alone, and that client signs in nowhere else.
        guard (resource == adminResource) == (clientID == Self.adminClientID), (resource == connectionsResource) == (clientID == Self.connectionsClientID) else {
            return fail("invalid_target", "resource must be one of this gateway's MCP endpoint URLs")
        }
        let authorizationRequest = AuthorizationRequest(
            clientID: clientID, clientName: client.metadata.client_name, redirectURI: redirectURI, state: state,
            codeChallenge: challenge, scope: Scopes.grant(requested: query["scope"]), resource: resource
        )
        // Always a fresh secret: one taken from the request could have been planted (fixation).
        let browserSecret = ClientRegistry.randomToken(bytes: 32)
        do {
            let (id, pending) = try await flows.begin(authorizationRequest, browserSecret: browserSecret)
            return consentPage(pending, id: id, client: client, extraHeaders: [.setCookie: browserCookie(browserSecret, name: cookieName(for: pending))])
        } catch {
            return storeUnavailablePage()
        }
    }

    /// The resource a request names, as this gateway spells it: a router's MCP endpoint URL (with or
    /// without a trailing slash) or the gateway's origin. Without `resource`, the origin.
    package func canonicalResource(_ requested: String?) -> String? {
        guard let requested else { return issuer }
        var trimmed = requested
        if trimmed.hasSuffix("/") { trimmed.removeLast() }
        if trimmed.lowercased() == issuer.lowercased() { return issuer }
        if currentConfiguration().admin != nil, trimmed == adminResource { return adminResource }
        if trimmed == connectionsResource, Self.hasConnections(currentConfiguration()) { return connectionsResource }
        for router in currentConfiguration().routers where router.acceptsOAuth {
            let url = router.resourceURL(publicURL: publicURL)
            if url == trimmed || url.lowercased() == trimmed.lowercased() { return url }
        }
        return nil
    }

    private func consentPage(_ pending: PendingAuthorization, id: String, client: ResolvedClient?, localError: String? = nil, username: String? = nil, status: HTTPResponse.Status = .ok, extraHeaders: HTTPFields = [:]) -> Response {
        let request = pending.request
        let page = AuthPages.consent(.init(
            clientName: request.clientName, clientID: request.clientID, clientIsVerified: client?.isMetadataDocument ?? ClientDirectory.isMetadataDocumentURL(request.clientID),
            redirectHost: URLComponents(string: request.redirectURI)?.host ?? request.redirectURI, resource: request.resource, scope: request.scope,
            requestID: id, csrfToken: pending.csrfToken, github: identityProviders["github"] != nil, local: identityProviders["local"] != nil, localError: localError, username: username
        ))
        return AuthPages.response(status, html: page, extraHeaders: extraHeaders)
    }

    private func browserCookie(_ secret: String, name: String) -> String {
        var cookie = "\(name)=\(secret); Path=/; HttpOnly; SameSite=Lax; Max-Age=900"
        if publicURL.scheme == "https" { cookie += "; Secure" }
        return cookie
    }

    private func errorRedirect(_ redirectURI: String, _ code: String, _ description: String, state: String?) -> String {
        FormEncoding.appending([("error", code), ("error_description", description), ("state", state), ("iss", issuer)], to: redirectURI)
    }

    // MARK: consent and sign-in

    private func consent(_ request: Request, context: some AuthorizationRequestContext) async -> Response {
        var request = request
        guard let form = await FormFields.body(&request), let id = form["request"] else {
            return AuthPages.error(.badRequest, title: "Invalid form", message: "The consent form was incomplete.")
        }
        let pending: PendingAuthorization
        do {
            guard let found = try await flows.load(id) else { return expiredPage() }
            pending = found
        } catch {
            return storeUnavailablePage()
        }
        // The browser that started the request, submitting the form this gateway rendered.
        guard AuthorizationFlows.isSameBrowser(pending, secret: Cookies.value(cookieName(for: pending), in: request)),
              let csrf = form["csrf"], ClientRegistry.constantTimeEqual(csrf, pending.csrfToken)
        else {
            return AuthPages.error(.forbidden, title: "Request refused", message: "This form was not submitted from the browser that started the sign-in. Start again from the application.")
        }
        let authorizationRequest = pending.request
        switch (form["action"], form["provider"]) {
        case ("deny", _):
            guard (try? await flows.take(id)) != nil else { return expiredPage() }
            return OAuthResponses.redirect(to: errorRedirect(authorizationRequest.redirectURI, "access_denied", "the user denied the request", state: authorizationRequest.state))
        case ("approve", let name?):
            switch identityProviders[name] {
            case let provider as any RedirectingIdentityProvider:
                do {
                    guard let taken = try await flows.take(id) else { return expiredPage() }
                    let state = try await flows.beginLogin(taken)
                    return OAuthResponses.redirect(to: provider.signInURL(state: state, callbackURL: callbackURL(for: provider), policy: policy(for: authorizationRequest.resource)))
                } catch {
                    return storeUnavailablePage()
                }
            case let provider as any CredentialIdentityProvider:
                return await credentialSignIn(form, provider: provider, id: id, pending: pending, context: context)
            default:
                return AuthPages.error(.badRequest, title: "This sign-in is not configured", message: "This gateway does not offer the sign-in method the form named.")
            }
        default:
            return AuthPages.error(.badRequest, title: "Invalid form", message: "The consent form was incomplete.")
        }
    }

    private func credentialSignIn(
        _ form: FormFields, provider: some CredentialIdentityProvider, id: String, pending: PendingAuthorization, context: some AuthorizationRequestContext
    ) async -> Response {
        let username = form["username"] ?? ""
        switch await provider.signIn(username: username, password: form["password"] ?? "", clientIP: context.clientIP, clientID: pending.request.clientID) {
        case .storeUnavailable:
            return storeUnavailablePage()
        case .refused(let message, let status):
            return consentPage(pending, id: id, client: nil, localError: message, username: username, status: status)
        case .notCompleted(let message):
            return consentPage(pending, id: id, client: nil, localError: message, username: username, status: .unauthorized)
        case .providerFailed(let message):
            return consentPage(pending, id: id, client: nil, localError: message, username: username, status: .badGateway)
        case .signedIn(let user):
            do {
                guard let taken = try await flows.take(id) else { return expiredPage() }
                return await finish(taken.request, user: user)
            } catch {
                return storeUnavailablePage()
            }
        }
    }

    /// The browser back from a redirecting provider (`/oauth/<name>/callback`).
    private func callback(_ request: Request, provider: some RedirectingIdentityProvider) async -> Response {
        let query = FormFields(query: request)
        guard let state = query["state"] else {
            return AuthPages.error(.badRequest, title: "Invalid sign-in response", message: "The sign-in answer had no state.")
        }
        let pending: PendingAuthorization
        do {
            guard let found = try await flows.takeLogin(state) else { return expiredPage() }
            pending = found
        } catch {
            return storeUnavailablePage()
        }
        let authorizationRequest = pending.request
        guard AuthorizationFlows.isSameBrowser(pending, secret: Cookies.value(cookieName(for: pending), in: request)) else {
            return AuthPages.error(.forbidden, title: "Request refused", message: "This sign-in was started in another browser. Start again from the application.")
        }
        switch await provider.signedIn(callback: query, callbackURL: callbackURL(for: provider), policy: policy(for: authorizationRequest.resource)) {
        case .signedIn(let user):
            return await finish(authorizationRequest, user: user)
        case .notCompleted(let detail):
            return OAuthResponses.redirect(to: errorRedirect(authorizationRequest.redirectURI, "access_denied", detail, state: authorizationRequest.state))
        case .refused(let message, let status):
            return AuthPages.error(status, title: "Invalid sign-in response", message: message)
        case .providerFailed(let detail):
            return AuthPages.error(
                .badGateway, title: "\(provider.displayName) sign-in failed", message: detail,
                returnURL: errorRedirect(authorizationRequest.redirectURI, "temporarily_unavailable", "sign-in with \(provider.displayName) failed", state: authorizationRequest.state)
            )
        case .storeUnavailable:
            return storeUnavailablePage()
        }
    }

    /// The allow-lists in force for a resource: the global list, narrowed by the router's own.
    /// The admin page's sign-in: its own resource (with `admin.allow` as its policy) and a built-in
    /// public client whose only redirect URI is the page's callback.
    package var adminResource: String { issuer + "/admin" }
    package static let adminClientID = "mcp-gateway-admin"

    /// The connections pages' sign-in (`/connect/<service>`, `/connections`): their own resource,
    /// with the global allow-list as its policy, and a built-in client like the admin page's.
    package var connectionsResource: String { issuer + "/connections" }
    package static let connectionsClientID = "mcp-gateway-connections"

    /// Whether any service calls its upstream with users' own tokens.
    package static func hasConnections(_ configuration: GatewayConfiguration) -> Bool {
        configuration.services.values.contains { service in
            if case .http(let http) = service { return http.oauth != nil }
            return false
        }
    }

    package func policy(for resource: String) -> AccessPolicy {
        let configuration = currentConfiguration()
        if resource == adminResource {
            // Nobody without an `admin:` section; only the admin allow-list otherwise.
            return AccessPolicy(global: AccessRule(configuration.admin?.allow ?? AllowList()), router: nil)
        }
        if resource == connectionsResource {
            return AccessPolicy(configuration: configuration, router: nil)
        }
        let router = configuration.routers.first { $0.resourceURL(publicURL: publicURL) == resource }
        return AccessPolicy(configuration: configuration, router: router)
    }

    /// Signed in: check the allow-lists, then send the browser back to the client with a code.
    private func finish(_ request: AuthorizationRequest, user: GrantSubject) async -> Response {
        guard policy(for: request.resource).admits(user.identity) else {
            logger.notice("sign-in denied by allow-list", metadata: ["login": "\(user.login)", "resource": "\(request.resource)"])
            audit?.record(AuditEvent("auth.denied", [
                ("reason", .string("not_on_allow_list")), ("user", .string(user.login)), ("subject", .string(user.subject)),
                ("client_id", .string(request.clientID)), ("resource", .string(request.resource)),
            ]))
            return AuthPages.error(
                .forbidden, title: "Access denied",
                message: "\(user.login) is not allowed to use \(request.resource). Ask the gateway's operator to add you to its allow-list.",
                returnURL: errorRedirect(request.redirectURI, "access_denied", "the user is not allowed to use this resource", state: request.state)
            )
        }
        do {
            // What the allow-lists were evaluated on, for the token check on MCP requests.
            try await store.set("identity:\(user.subject)", Array(JSONEncoder().encode(user)), ttl: refreshTokens.lifetime)
            let grant = Grant(clientID: request.clientID, user: user, scope: request.scope, resource: request.resource)
            let code = try await codes.issue(grant, redirectURI: request.redirectURI, codeChallenge: request.codeChallenge)
            try await users?.recordSignIn(login: user.login, subject: user.subject, clientID: request.clientID)
            logger.info("authorization granted", metadata: ["login": "\(user.login)", "client": "\(request.clientID)", "resource": "\(request.resource)"])
            audit?.record(AuditEvent("auth.signin", [
                ("user", .string(user.login)), ("subject", .string(user.subject)), ("client_id", .string(request.clientID)), ("resource", .string(request.resource)),
            ]))
            return OAuthResponses.redirect(to: FormEncoding.appending([("code", code), ("state", request.state), ("iss", issuer)], to: request.redirectURI))
        } catch {
            return storeUnavailablePage()
        }
    }

    private func expiredPage() -> Response {
        AuthPages.error(.badRequest, title: "Sign-in expired", message: "This sign-in request expired or was already used. Start again from the application.")
    }

    private func storeUnavailablePage() -> Response {
        AuthPages.error(.serviceUnavailable, title: "Temporarily unavailable", message: "The gateway cannot reach its state store. Try again in a moment.")
    }

    private func clientLookupPage(_ error: ClientLookupError) -> Response {
        switch error {
        case .unusableDocument(let detail):
            return AuthPages.error(.badRequest, title: "Application metadata unusable", message: detail)
        case .storeUnavailable:
            return storeUnavailablePage()
        }
    }

    // MARK: client authentication (token, revocation, introspection)

    package enum ClientAuthFailure: Error {
        case response(Response)
    }

    /// RFC 6749 §2.3: the client's registered method decides; an unknown client or wrong secret is
    /// `invalid_client` (401), which makes clients such as Claude register again.
    private func authenticateClient(_ request: Request, form: FormFields) async throws(ClientAuthFailure) -> ResolvedClient {
        if form["client_assertion_type"] != nil || form["client_assertion"] != nil {
            return try await authenticateWithAssertion(request, form: form)
        }
        var clientID = form["client_id"]
        var secret = form["client_secret"]
        var method = ClientMetadata.AuthMethod.none
        var usedBasic = false
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "basic", let decoded = Data(base64Encoded: String(parts[1])).flatMap({ String(data: $0, encoding: .utf8) }),
                  let colon = decoded.firstIndex(of: ":")
            else { throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "the Authorization header is not valid HTTP Basic client authentication", basicChallenge: true)) }
            guard secret == nil else { throw .response(OAuthResponses.error(.badRequest, "invalid_request", "use one client authentication method, not two")) }
            let headerID = String(decoded[..<colon]).removingPercentEncoding ?? ""
            if let clientID, clientID != headerID {
                throw .response(OAuthResponses.error(.badRequest, "invalid_request", "client_id in the body differs from the one authenticated"))
            }
            clientID = headerID
            secret = String(decoded[decoded.index(after: colon)...]).removingPercentEncoding
            method = .clientSecretBasic
            usedBasic = true
        } else if secret != nil {
            method = .clientSecretPost
        }
        guard let clientID, !clientID.isEmpty else {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "client authentication is required (client_id)", basicChallenge: usedBasic))
        }
        let client = try await resolveClient(clientID, basicChallenge: usedBasic)
        let expected = client.metadata.token_endpoint_auth_method
        // A private_key_jwt document's client may also come as a public client (PKCE binds its
        // codes): such documents work either way.
        guard expected == method || (expected == .privateKeyJWT && method == .none) else {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "this client authenticates with \(expected.rawValue)", basicChallenge: usedBasic))
        }
        if method != .none {
            guard let secret, let hash = client.clientSecretHash, ClientRegistry.constantTimeEqual(hash, ClientRegistry.hash(secret)) else {
                throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "client authentication failed", basicChallenge: usedBasic))
            }
        }
        return client
    }

    /// The client a `/token`, `/revoke` or `/introspect` request names; an unknown one is
    /// `invalid_client` (401), which makes clients register again.
    private func resolveClient(_ clientID: String, basicChallenge: Bool) async throws(ClientAuthFailure) -> ResolvedClient {
        let found: ResolvedClient?
        do { found = try await clients.resolve(clientID) } catch {
            switch error {
            case .unusableDocument(let detail): throw .response(OAuthResponses.error(.unauthorized, "invalid_client", detail))
            case .storeUnavailable: throw .response(OAuthResponses.storeUnavailable)
            }
        }
        guard let found else {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "unknown client; register again", basicChallenge: basicChallenge))
        }
        return found
    }

    /// RFC 7523 §2.2: a client assertion instead of a secret, for `private_key_jwt` documents.
    private func authenticateWithAssertion(_ request: Request, form: FormFields) async throws(ClientAuthFailure) -> ResolvedClient {
        guard form["client_assertion_type"] == ClientAssertions.type, let assertion = form["client_assertion"] else {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "client_assertion_type must be \(ClientAssertions.type), with client_assertion"))
        }
        guard request.headers[.authorization] == nil, form["client_secret"] == nil else {
            throw .response(OAuthResponses.error(.badRequest, "invalid_request", "use one client authentication method, not two"))
        }
        guard let claimed = ClientAssertions.claimedClient(assertion), form["client_id"] == nil || form["client_id"] == claimed else {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "the client assertion does not name the client_id"))
        }
        let client = try await resolveClient(claimed, basicChallenge: false)
        guard client.metadata.token_endpoint_auth_method == .privateKeyJWT, let documents else {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "this client does not authenticate with private_key_jwt"))
        }
        let audiences: Set<String> = [issuer, issuer + "/", issuer + "/token"]
        do {
            var keys = await JOSEKeys(try await documents.keySet(for: client.metadata), logger: logger)
            // An assertion signed with a key the cached set lacks: the client may have rotated.
            if let keyID = ClientAssertions.keyID(assertion), !keys.knows(keyID) {
                keys = await JOSEKeys(try await documents.keySet(for: client.metadata, refresh: true), logger: logger)
            }
            try await ClientAssertions.verify(assertion, clientID: client.clientID, keys: keys, audiences: audiences, store: store)
        } catch let error as JOSEError {
            logger.notice("client assertion refused", metadata: ["client_id": "\(client.clientID)", "reason": "\(error.description)"])
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", error.description))
        } catch {
            throw .response(OAuthResponses.error(.unauthorized, "invalid_client", "the client's keys could not be fetched"))
        }
        return client
    }

    /// The form of a client-authenticated endpoint (/token, /revoke, /introspect) and its client.
    private func authenticatedForm(_ request: Request) async -> Result<(FormFields, ResolvedClient), ClientAuthFailure> {
        var request = request
        switch await formBody(&request) {
        case .success(let form):
            do { return .success((form, try await authenticateClient(request, form: form))) } catch { return .failure(error) }
        case .failure(let failure):
            return .failure(failure)
        }
    }

    private func formBody(_ request: inout Request) async -> Result<FormFields, ClientAuthFailure> {
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true else {
            return .failure(.response(OAuthResponses.error(.badRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")))
        }
        guard let form = await FormFields.body(&request) else {
            return .failure(.response(OAuthResponses.error(.badRequest, "invalid_request", "the body is too large")))
        }
        if let name = form.repeated.first {
            return .failure(.response(OAuthResponses.error(.badRequest, "invalid_request", "the parameter \(name) appears more than once")))
        }
        return .success(form)
    }

    // MARK: /token

    /// `auth.token.rateLimit` per client address and minute (the store counts, so the limit holds
    /// across instances); a store that cannot count lets the request through to the store-backed
    /// checks, which fail closed themselves.
    private func tokenRateLimited(clientIP: String?) async -> Response? {
        let limit = currentConfiguration().auth?.tokenRateLimit ?? ConfigurationDefaults.tokenRateLimit
        guard let count = try? await store.increment("ratelimit:token:\(ClientAddress.limitKey(clientIP))", window: .seconds(60)), count > limit else { return nil }
        logger.notice("token requests over the per-address limit", metadata: ["ip": "\(clientIP ?? "")", "limit": "\(limit)"])
        var response = OAuthResponses.error(.tooManyRequests, "rate_limited", "too many token requests from this address; retry in a minute")
        response.headers[.retryAfter] = "60"
        return response
    }

    private func token(_ request: Request) async -> Response {
        var request = request
        let form: FormFields
        switch await formBody(&request) {
        case .success(let fields): form = fields
        case .failure(.response(let response)): return response
        }
        // Machine clients are the operator's (auth.clients), not registered ones.
        if form["grant_type"] == "client_credentials" { return await clientCredentials(request, form: form) }
        let client: ResolvedClient
        do { client = try await authenticateClient(request, form: form) } catch {
            switch error { case .response(let response): return response }
        }
        if case .registered(let record) = client.origin {
            try? await registry.touch(record)
        }
        switch form["grant_type"] {
        case "authorization_code":
            return await redeemCode(form, client: client)
        case "refresh_token":
            return await refresh(form, client: client)
        case nil:
            return OAuthResponses.error(.badRequest, "invalid_request", "grant_type is required")
        case let other?:
            return OAuthResponses.error(.badRequest, "unsupported_grant_type", "grant_type \(other) is not supported")
        }
    }

    // MARK: client_credentials

    /// RFC 6749 §4.4 for the machine clients in `auth.clients`: the client authenticates with its
    /// secret (HTTP Basic or the form), names the MCP endpoint (`resource`), and gets an access
    /// token for it as its configured user; no refresh token (it can always ask again).
    private func clientCredentials(_ request: Request, form: FormFields) async -> Response {
        let machineClients = currentConfiguration().auth?.machineClients ?? []
        guard !machineClients.isEmpty else {
            return OAuthResponses.error(.badRequest, "unsupported_grant_type", "grant_type client_credentials is not enabled (auth.clients)")
        }
        var clientID = form["client_id"], secret = form["client_secret"]
        var usedBasic = false
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "basic", secret == nil,
                  let decoded = Data(base64Encoded: String(parts[1])).flatMap({ String(data: $0, encoding: .utf8) }), let colon = decoded.firstIndex(of: ":"),
                  let headerID = String(decoded[..<colon]).removingPercentEncoding, clientID == nil || clientID == headerID
            else { return OAuthResponses.error(.unauthorized, "invalid_client", "client authentication failed", basicChallenge: true) }
            clientID = headerID
            secret = String(decoded[decoded.index(after: colon)...]).removingPercentEncoding
            usedBasic = true
        }
        // The same answer for an unknown client and a wrong secret: no oracle for client ids.
        guard let clientID, let secret, let machine = machineClients.first(where: { $0.id == clientID }),
              ClientRegistry.constantTimeEqual(Array(SHA256.hash(data: Data(secret.utf8))), machine.secretHash)
        else {
            logger.notice("client_credentials refused: unknown client or wrong secret", metadata: ["client_id": "\(clientID ?? "")"])
            audit?.record(AuditEvent("auth.denied", [("reason", .string("invalid_client")), ("client_id", .string(clientID ?? ""))]))
            return OAuthResponses.error(.unauthorized, "invalid_client", "client authentication failed", basicChallenge: usedBasic)
        }
        guard let requested = form["resource"] else {
            return OAuthResponses.error(.badRequest, "invalid_request", "resource is required: the URL of the MCP endpoint the token is for")
        }
        guard let resource = canonicalResource(requested), resource != issuer else {
            return OAuthResponses.error(.badRequest, "invalid_target", "resource is not one of this gateway's MCP endpoints")
        }
        let user = GrantSubject(subject: "client:\(machine.id)", login: machine.user, orgs: [], teams: [])
        guard policy(for: resource).admits(user.identity) else {
            return OAuthResponses.error(.badRequest, "unauthorized_client", "\(machine.user) is not allowed to use \(resource)")
        }
        let allowed = Set(machine.scopes.isEmpty ? [Scopes.mcp] : machine.scopes)
        let asked = form["scope"].map { Set($0.split(separator: " ").map(String.init)).intersection(Scopes.supported) } ?? allowed
        let scope = asked.intersection(allowed)
        guard !scope.isEmpty else { return OAuthResponses.error(.badRequest, "invalid_scope", "this client may be granted: \(allowed.sorted().joined(separator: " "))") }
        let grant = Grant(clientID: machine.id, user: user, scope: scope.sorted().joined(separator: " "), resource: resource)
        do {
            let lifetime = accessTokenLifetime(for: machine.id)
            let accessToken = try await accessTokens.issue(for: grant, lifetime: lifetime, grantType: "client_credentials")
            metrics?.tokenIssued(grantType: "client_credentials")
            audit?.record(AuditEvent("token.issued", [
                ("grant_type", .string("client_credentials")), ("user", .string(machine.user)), ("subject", .string(user.subject)),
                ("client_id", .string(machine.id)), ("resource", .string(resource)),
            ]))
            return OAuthResponses.json(.ok, [
                "access_token": accessToken, "token_type": "Bearer", "expires_in": Int(lifetime.components.seconds), "scope": grant.scope,
            ])
        } catch {
            return OAuthResponses.storeUnavailable
        }
    }

    private func redeemCode(_ form: FormFields, client: ResolvedClient) async -> Response {
        guard let code = form["code"], let verifier = form["code_verifier"] else {
            return OAuthResponses.error(.badRequest, "invalid_request", "code and code_verifier are required")
        }
        guard let redirectURI = form["redirect_uri"] ?? (client.metadata.redirect_uris.count == 1 ? client.metadata.redirect_uris[0] : nil) else {
            return OAuthResponses.error(.badRequest, "invalid_request", "redirect_uri is required")
        }
        var resource: String?
        if let requested = form["resource"] {
            guard let canonical = canonicalResource(requested) else {
                return OAuthResponses.error(.badRequest, "invalid_target", "resource is not one of this gateway's MCP endpoints")
            }
            resource = canonical
        }
        do {
            let family = RefreshTokens.newFamily()
            let grant = try await codes.redeem(code, clientID: client.clientID, redirectURI: redirectURI, codeVerifier: verifier, resource: resource, family: family)
            return await tokenResponse(grant, client: client, refreshToken: nil, family: family)
        } catch {
            return grantErrorResponse(error)
        }
    }

    private func refresh(_ form: FormFields, client: ResolvedClient) async -> Response {
        guard client.metadata.grant_types.contains("refresh_token") else {
            return OAuthResponses.error(.badRequest, "unauthorized_client", "this client is not registered for the refresh_token grant")
        }
        guard let presented = form["refresh_token"] else {
            return OAuthResponses.error(.badRequest, "invalid_request", "refresh_token is required")
        }
        let rotation: RefreshTokens.Rotation
        do { rotation = try await refreshTokens.rotate(presented, clientID: client.clientID) } catch { return grantErrorResponse(error) }
        switch rotation {
        case .racing(let answer):
            logger.debug("a refresh raced an earlier presentation of the same token, or followed its answer within auth.refreshReuseGrace; the same answer is sent", metadata: ["client_id": "\(client.clientID)"])
            return OAuthResponses.jsonBytes(.ok, answer)
        case .rotated(var grant, let next, let family):
            if let requested = form["resource"], canonicalResource(requested) != grant.resource {
                await refreshTokens.answerSent(for: presented)
                return OAuthResponses.error(.badRequest, "invalid_target", "a refresh token serves only the resource it was issued for")
            }
            // The allow-lists in force now decide, not those at sign-in.
            guard policy(for: grant.resource).admits(grant.user.identity) else {
                try? await refreshTokens.revokeFamily(family)
                await refreshTokens.answerSent(for: presented)
                return OAuthResponses.error(.badRequest, "invalid_grant", "\(grant.user.login) is no longer allowed to use \(grant.resource)")
            }
            if let narrowed = Scopes.narrow(granted: grant.scope, requested: form["scope"]) {
                grant.scope = narrowed
            } else {
                await refreshTokens.answerSent(for: presented)
                return OAuthResponses.error(.badRequest, "invalid_scope", "a refresh can only keep or narrow the granted scope")
            }
            return await tokenResponse(grant, client: client, refreshToken: next, family: family, presented: presented)
        }
    }

    /// The access-token lifetime for `clientID`: its `auth.clientOverrides` entry, else
    /// `auth.accessTokenTTL`.
    private func accessTokenLifetime(for clientID: String) -> Duration {
        currentConfiguration().auth?.accessTokenLifetime(for: clientID) ?? accessTokens.lifetime
    }

    /// `family`: the sign-in the tokens belong to (its revocation revokes the access token too).
    /// `presented`: the refresh token this answers, whose racing presentations get the same answer
    /// until it has been sent.
    private func tokenResponse(_ grant: Grant, client: ResolvedClient, refreshToken: String?, family: String, presented: String? = nil) async -> Response {
        do {
            // Each sign-in's family is indexed under its user before any token of it exists, so
            // revoking the user reaches every token.
            if refreshToken == nil {
                try await users?.addFamily(login: grant.user.login, family: family)
            } else {
                try await users?.recordActivity(login: grant.user.login)
            }
            let lifetime = accessTokenLifetime(for: client.clientID)
            let accessToken = try await accessTokens.issue(for: grant, family: family, lifetime: lifetime)
            var body: [String: Any] = [
                "access_token": accessToken, "token_type": "Bearer", "expires_in": Int(lifetime.components.seconds), "scope": grant.scope,
            ]
            // Never `refresh_token: null`: the field is present only with a token in it.
            if let refreshToken {
                body["refresh_token"] = refreshToken
            } else if client.metadata.grant_types.contains("refresh_token") {
                body["refresh_token"] = try await refreshTokens.issue(grant, family: family)
            }
            metrics?.tokenIssued(grantType: refreshToken == nil ? "authorization_code" : "refresh_token")
            audit?.record(AuditEvent(refreshToken == nil ? "token.issued" : "token.refreshed", [
                ("grant_type", .string(refreshToken == nil ? "authorization_code" : "refresh_token")), ("user", .string(grant.user.login)),
                ("subject", .string(grant.user.subject)), ("client_id", .string(client.clientID)), ("resource", .string(grant.resource)),
                ("family", .string(String(ClientRegistry.hash(family).prefix(16)))),
            ]))
            guard let presented else { return OAuthResponses.json(.ok, body) }
            let bytes = JSONResponse.encode(body)
            var held: String?
            do {
                try await refreshTokens.holdAnswer(bytes, for: presented, clientID: client.clientID)
                held = client.clientID
            } catch {
                // Without the held answer a racing presentation waits and is told to retry; the
                // answer itself is still good.
                logger.warning("cannot hold a refresh answer for racing presentations", metadata: ["error": "\(error)"])
            }
            return OAuthResponses.jsonBytes(.ok, bytes) { [held] in await refreshTokens.answerSent(for: presented, heldFor: held) }
        } catch let error as GrantError {
            if let presented { await refreshTokens.answerSent(for: presented) }
            return grantErrorResponse(error)
        } catch {
            if let presented { await refreshTokens.answerSent(for: presented) }
            return OAuthResponses.storeUnavailable
        }
    }

    private func grantErrorResponse(_ error: GrantError) -> Response {
        switch error {
        case .invalidGrant(let description): OAuthResponses.error(.badRequest, "invalid_grant", description)
        case .storeUnavailable: OAuthResponses.storeUnavailable
        }
    }

    // MARK: /revoke and /introspect

    private func revoke(_ request: Request) async -> Response {
        let form: FormFields, client: ResolvedClient
        switch await authenticatedForm(request) {
        case .success(let authenticated): (form, client) = authenticated
        case .failure(.response(let response)): return response
        }
        guard let token = form["token"] else { return OAuthResponses.error(.badRequest, "invalid_request", "token is required") }
        do {
            // Another client's token is left alone and answered like an unknown one: a different
            // answer would tell that client the token exists (RFC 7009 §2.2).
            if let (grant, family) = try await refreshTokens.inspect(token) {
                if grant.clientID == client.clientID {
                    try await refreshTokens.revokeFamily(family)
                    audit?.record(AuditEvent("token.revoked", [
                        ("token_type", .string("refresh_token")), ("user", .string(grant.user.login)), ("client_id", .string(client.clientID)),
                        ("family", .string(String(ClientRegistry.hash(family).prefix(16)))),
                    ]))
                }
            } else if let ring = try? await keys.current(), let claims = try? accessTokens.checkSignatureAndClaims(token, ring: ring, audience: nil) {
                if claims.client_id == client.clientID {
                    try await accessTokens.revoke(claims)
                    audit?.record(AuditEvent("token.revoked", [
                        ("token_type", .string("access_token")), ("user", .string(claims.login)), ("client_id", .string(client.clientID)),
                    ]))
                }
            }
            // RFC 7009 §2.2: unknown, expired or already revoked tokens are answered 200 too.
            return Response(status: .ok, headers: [.cacheControl: "no-store"])
        } catch {
            return OAuthResponses.storeUnavailable
        }
    }

    private func introspect(_ request: Request) async -> Response {
        let form: FormFields, client: ResolvedClient
        switch await authenticatedForm(request) {
        case .success(let authenticated): (form, client) = authenticated
        case .failure(.response(let response)): return response
        }
        guard let token = form["token"] else { return OAuthResponses.error(.badRequest, "invalid_request", "token is required") }
        let inactive = OAuthResponses.json(.ok, ["active": false])
        do {
            if let (grant, _) = try await refreshTokens.inspect(token) {
                guard grant.clientID == client.clientID else { return inactive }
                return OAuthResponses.json(.ok, [
                    "active": true, "token_type": "refresh_token", "client_id": grant.clientID, "scope": grant.scope,
                    "sub": grant.user.subject, "username": grant.user.login, "aud": grant.resource, "iss": issuer,
                ])
            }
        } catch {
            return OAuthResponses.storeUnavailable
        }
        do {
            let claims = try await accessTokens.validate(token, audience: nil)
            // A client sees only its own tokens; for any other, the token does not exist.
            guard claims.client_id == client.clientID else { return inactive }
            return OAuthResponses.json(.ok, [
                "active": true, "token_type": "Bearer", "client_id": claims.client_id, "scope": claims.scope, "sub": claims.sub,
                "username": claims.login, "aud": claims.aud, "iss": claims.iss, "exp": claims.exp, "iat": claims.iat, "jti": claims.jti,
            ])
        } catch {
            if case .storeUnavailable = error { return OAuthResponses.storeUnavailable }
            return inactive
        }
    }
}



/// RFC 6749 JSON responses: every one `no-store`.
package enum OAuthResponses {
    package static let pragma = HTTPField.Name("Pragma")!

    package static func json(_ status: HTTPResponse.Status, _ object: [String: Any], cache: String = "no-store") -> Response {
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: cache]
        if cache == "no-store" { headers[pragma] = "no-cache" }
        return JSONResponse.make(status: status, object: object, headers: headers)
    }

    /// A JSON body already encoded; `afterSending` runs once the body has been written out.
    package static func jsonBytes(_ status: HTTPResponse.Status, _ bytes: [UInt8], afterSending: (@Sendable () async -> Void)? = nil) -> Response {
        let headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store", pragma: "no-cache"]
        guard let afterSending else { return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes))) }
        return Response(status: status, headers: headers, body: ResponseBody(contentLength: bytes.count) { writer in
            try await writer.write(ByteBuffer(bytes: bytes))
            try await writer.finish(nil)
            await afterSending()
        })
    }

    package static func error(_ status: HTTPResponse.Status, _ code: String, _ description: String, basicChallenge: Bool = false) -> Response {
        OAuthRefusal(status: status, code: code, description: description, challenge: basicChallenge ? "Basic realm=\"mcp-gateway\"" : nil).response
    }

    package static var storeUnavailable: Response {
        OAuthRefusal(
            status: .serviceUnavailable, code: "temporarily_unavailable", description: "the gateway's state store is unavailable; retry shortly", retryAfter: "2"
        ).response
    }

    package static func redirect(to location: String) -> Response {
        // 303: after a form POST the browser must GET the next page.
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store", HTTPField.Name("Referrer-Policy")!: "no-referrer"])
    }

    package static func methodNotAllowed(_ allow: String) -> Response {
        var response = error(.methodNotAllowed, "invalid_request", "method not allowed")
        response.headers[.allow] = allow
        return response
    }
}

/// A fixed number of slots for CPU-heavy work done before anyone is authenticated; a request that
/// finds none free is refused at once instead of queueing behind the others.
package final class HashingSlots: Sendable {
    private let limit: Int
    private let inUse = Mutex(0)

    package init(limit: Int) {
        self.limit = limit
    }

    package func acquire() -> Bool {
        inUse.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    package func release() {
        inUse.withLock { $0 -= 1 }
    }
}
