import AuthorizationEndpoints
import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayStore
import HTTPTypes
import Hummingbird

/// Who is signed in to one of the gateway's own pages, with the orgs and teams read then (the
/// page's allow-list is re-checked on them at every request).
struct PageSession: Codable {
    let user: GrantSubject
    /// Every form of the page carries it.
    let csrf: String

    var login: String { user.login }
    var subject: String { user.subject }
}

/// The gateway's own sign-in for its pages (`/admin`, the connections pages): each page is a
/// built-in public OAuth client whose resource is its own (`<publicURL>/admin`, …), so the page's
/// allow-list decides who gets in. The code comes back to the page's callback and is redeemed
/// here; a session cookie (HttpOnly, `__Host-` over https) then stands for the user for an hour.
/// The sign-in's state and PKCE verifier (and where to return) ride in a short-lived cookie of the
/// browser that started it: a callback in another browser (a planted code) does not match.
struct PageSignIn: Sendable {
    let oauth: OAuthEndpoints
    let store: any KeyValueStore
    let clientID: String
    let resource: String
    /// `/admin/callback`, …
    let callbackPath: String
    /// The session cookie's name without `__Host-`; the sign-in's own adds `-login`.
    let cookieName: String
    /// `Strict` keeps every other site's request without it; `Lax` lets a redirect back from
    /// another site (an upstream's authorization server) carry it.
    let sameSite: String
    /// The store keys of sessions: `<prefix>:<sha256(cookie)>`.
    let storePrefix: String
    let secure: Bool

    static let sessionLifetime: Duration = .seconds(3600)

    var sessionCookie: String { (secure ? "__Host-" : "") + cookieName }
    private var loginCookie: String { sessionCookie + "-login" }
    private var callbackURL: String { oauth.issuer + callbackPath }

    /// Sends the browser to sign in; afterwards it returns to `returnTo` (a path of the page).
    func start(returnTo: String) -> Response {
        let verifier = ClientRegistry.randomToken(bytes: 32)
        let state = ClientRegistry.randomToken(bytes: 16)
        let url = FormEncoding.appending([
            ("response_type", "code"), ("client_id", clientID), ("redirect_uri", callbackURL),
            ("code_challenge", PKCE.challenge(for: verifier)), ("code_challenge_method", "S256"), ("state", state), ("resource", resource),
        ], to: oauth.issuer + "/authorize")
        let target = Base64URL.encode(Array(returnTo.utf8))
        return Self.redirect(url, cookies: [cookie(loginCookie, "\(state).\(verifier).\(target)", maxAge: 900, sameSite: "Lax")])
    }

    /// The callback: the code redeemed, a session made; the browser goes back where it started,
    /// if `allowedReturn` accepts that path, else to `fallback`. `again` says how to retry. The
    /// session is nil when the sign-in failed (the response is the page saying why).
    func finish(_ request: Request, fallback: String, again: String, allowedReturn: (String) -> Bool) async throws -> (response: Response, session: PageSession?) {
        let query = FormFields(query: request)
        guard let code = query["code"], let state = query["state"], let saved = Cookies.value(loginCookie, in: request) else {
            return (AuthPages.error(.badRequest, title: "Sign-in failed", message: query["error_description"] ?? "The sign-in did not complete; \(again)."), nil)
        }
        let parts = saved.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, Self.same(parts[0], state) else {
            return (AuthPages.error(.badRequest, title: "Sign-in failed", message: "This sign-in was started in another browser; \(again)."), nil)
        }
        let grant: Grant
        do {
            grant = try await oauth.codes.redeem(code, clientID: clientID, redirectURI: callbackURL, codeVerifier: parts[1], resource: resource, family: RefreshTokens.newFamily())
        } catch {
            return (AuthPages.error(.badRequest, title: "Sign-in failed", message: "The sign-in code cannot be used; \(again)."), nil)
        }
        let token = ClientRegistry.randomToken(bytes: 32)
        let session = PageSession(user: grant.user, csrf: ClientRegistry.randomToken(bytes: 24))
        try await store.set("\(storePrefix):\(ClientRegistry.hash(token))", Array(JSONEncoder().encode(session)), ttl: Self.sessionLifetime)
        // Only a path the page accepts: never somewhere a link chose.
        var target = Base64URL.decode(parts[2]).map { String(decoding: $0, as: UTF8.self) } ?? fallback
        if !target.hasPrefix("/") || target.hasPrefix("//") || target.contains("\\") || !allowedReturn(target) { target = fallback }
        return (Self.redirect(target, cookies: [
            cookie(sessionCookie, token, maxAge: Int(Self.sessionLifetime.components.seconds), sameSite: sameSite), expired(loginCookie),
        ]), session)
    }

    /// The signed-in user of `request`, while the page's resource policy still admits them (a
    /// reload that removes someone locks them out at their next request).
    func session(of request: Request) async throws -> PageSession? {
        guard let token = Cookies.value(sessionCookie, in: request),
              let bytes = try await store.get("\(storePrefix):\(ClientRegistry.hash(token))"),
              let session = try? JSONDecoder().decode(PageSession.self, from: Data(bytes))
        else { return nil }
        return oauth.policy(for: resource).admits(session.user.identity) ? session : nil
    }

    /// Ends the session of `request` (the form's token checked by the caller).
    func signOut(_ request: Request) async throws -> String {
        if let token = Cookies.value(sessionCookie, in: request) {
            _ = try await store.delete(["\(storePrefix):\(ClientRegistry.hash(token))"])
        }
        return expired(sessionCookie)
    }

    /// A form posted from another origin (SameSite already keeps other sites' forms out; this
    /// makes sure). "null" is what a browser sends under a no-referrer policy: the form's token
    /// decides then.
    func isFromAnotherSite(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin], origin != "null" else { return false }
        return origin.lowercased() != oauth.issuer.lowercased()
    }

    private func cookie(_ name: String, _ value: String, maxAge: Int, sameSite: String) -> String {
        var text = "\(name)=\(value); Path=/; HttpOnly; SameSite=\(sameSite); Max-Age=\(maxAge)"
        if secure { text += "; Secure" }
        return text
    }

    private func expired(_ name: String) -> String { cookie(name, "", maxAge: 0, sameSite: "Lax") }

    static func redirect(_ location: String, cookies: [String]) -> Response {
        var headers: HTTPFields = [.location: location, .cacheControl: "no-store", .contentLength: "0"]
        for cookie in cookies { headers.append(HTTPField(name: .setCookie, value: cookie)) }
        return Response(status: .seeOther, headers: headers)
    }

    static func same(_ presented: String?, _ expected: String) -> Bool {
        guard let presented else { return false }
        return ClientRegistry.constantTimeEqual(presented, expected)
    }
}
