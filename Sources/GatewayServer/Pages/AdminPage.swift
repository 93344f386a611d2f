import AuthorizationEndpoints
import AuthorizationServer
import Foundation
import GatewayAdmin
import GatewayAudit
import GatewayPages
import GatewayAuth
import GatewayConfig
import GatewayStore
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix

/// `/admin`: clients, users, sessions and recent audit events, with revoke and end buttons, for
/// the users `admin.allow` admits. Sign-in is the gateway's own (GitHub or local accounts): the
/// page is a built-in OAuth client whose resource is `<publicURL>/admin` and whose policy is the
/// admin allow-list; the code is redeemed here, and a session cookie (HttpOnly, SameSite=Strict,
/// `__Host-` over https) stands for the administrator for an hour. Every change is a POST with the
/// session's CSRF token; no JavaScript.
struct AdminPage: Sendable {
    let oauth: OAuthEndpoints
    let administration: Administration
    let store: any KeyValueStore
    let holder: ConfigurationHolder
    let audit: (sink: any AuditSink, configuration: AuditConfiguration)?

    private var signIn: PageSignIn {
        PageSignIn(
            oauth: oauth, store: store, clientID: OAuthEndpoints.adminClientID, resource: oauth.adminResource, callbackPath: "/admin/callback",
            cookieName: "mcpgw-admin", sameSite: "Strict", storePrefix: "admin-session", secure: holder.current.configuration.publicURL.scheme == "https"
        )
    }

    /// The page's answer for `/admin` paths; nil for anything else (or when `admin:` is not set).
    func respond(to request: Request, context: GatewayRequestContext) async -> Response? {
        let path = request.uri.path
        guard path == "/admin" || path.hasPrefix("/admin/"), holder.current.configuration.admin != nil else { return nil }
        do {
            switch (request.method, path) {
            case (.get, "/admin"), (.head, "/admin"):
                guard let session = try await signIn.session(of: request) else { return signIn.start(returnTo: "/admin") }
                return try await dashboard(session, done: FormFields(query: request)["done"])
            case (.get, "/admin/callback"):
                let (response, session) = try await signIn.finish(request, fallback: "/admin", again: "open /admin again") { $0 == "/admin" }
                if let session { record("admin.signin", session, []) }
                return response
            case (.post, "/admin/action"):
                return try await action(request, context: context)
            case (.post, "/admin/logout"):
                var request = request
                guard let session = try await signIn.session(of: request), let form = await FormFields.body(&request), PageSignIn.same(form["csrf"], session.csrf) else {
                    return PageSignIn.redirect("/", cookies: [])
                }
                return PageSignIn.redirect("/", cookies: [try await signIn.signOut(request)])
            default:
                return AuthPages.error(.notFound, title: "Not found", message: "There is no such admin page.")
            }
        } catch {
            return AuthPages.error(.serviceUnavailable, title: "Store unavailable", message: "The gateway's store cannot be reached; try again shortly.")
        }
    }

    // MARK: the page

    private func dashboard(_ session: PageSession, done: String?) async throws -> Response {
        let clients = try await administration.clients()
        let users = try await administration.userList()
        let sessions = try await administration.sessionList()
        let (events, auditNote) = await recentAuditEvents()
        var context: [String: Any] = [
            "title": "mcp-gateway administration", "login": session.login, "csrf": session.csrf,
            "users": users.map { ["login": $0.login, "subject": $0.subject, "lastSeen": Self.time($0.lastSeen), "signIns": "\($0.signIns)"] },
            "clients": clients.map {
                ["clientID": $0.clientID, "name": $0.clientName ?? "", "registered": Self.time($0.issuedAt), "redirectURIs": $0.redirectURIs.joined(separator: " ")]
            },
            "sessions": sessions.map { ["session": $0.session, "router": $0.router, "subject": $0.subject ?? "", "expiresIn": "\($0.expiresInSeconds / 60) min"] },
            "events": events,
        ]
        // Absent keys, not nil values: Mustache would print an Optional's description.
        if let done { context["done"] = Self.doneMessage(done) }
        if let auditNote { context["auditNote"] = auditNote }
        // Same-origin referrers, so the page's own forms carry an Origin to check.
        return AuthPages.response(.ok, html: Pages.render("admin", context), extraHeaders: [HTTPField.Name("Referrer-Policy")!: "same-origin"])
    }

    private static func doneMessage(_ code: String) -> String {
        switch code {
        case "revoke-user": "The user's tokens are revoked: their next call is refused."
        case "revoke-client": "The client is revoked."
        case "end-session": "The session is ended."
        case "missing": "Nothing by that name exists (any more)."
        default: "Done."
        }
    }

    private func action(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        var request = request
        guard let session = try await signIn.session(of: request) else {
            return AuthPages.error(.forbidden, title: "Not signed in", message: "Open /admin and sign in again.")
        }
        if signIn.isFromAnotherSite(request) {
            return AuthPages.error(.forbidden, title: "Refused", message: "The form came from another site.")
        }
        guard let form = await FormFields.body(&request), PageSignIn.same(form["csrf"], session.csrf), let action = form["action"], let target = form["target"], !target.isEmpty else {
            return AuthPages.error(.forbidden, title: "Refused", message: "The form has expired; reload the page.")
        }
        let found: Bool
        switch action {
        case "revoke-user": found = try await administration.revokeUser(target) > 0
        case "revoke-client": found = try await administration.revokeClient(target)
        case "end-session": found = try await administration.endSession(target)
        default: return AuthPages.error(.badRequest, title: "Unknown action", message: "The form asked for something this page does not do.")
        }
        record("admin.\(action)", session, [("target", .string(target)), ("ip", context.clientIP.map(AuditEvent.Value.string))])
        return PageSignIn.redirect("/admin?done=\(found ? action : "missing")", cookies: [])
    }

    private func record(_ event: String, _ session: PageSession, _ fields: [(String, AuditEvent.Value?)]) {
        audit?.sink.record(AuditEvent(event, [("user", .string(session.login)), ("subject", .string(session.subject))] + fields))
    }

    /// The last 50 lines of the audit log file, newest first (read off the event loop).
    private func recentAuditEvents() async -> ([[String: String]], String?) {
        guard let audit else { return ([], "No audit log is configured (audit.file).") }
        let path = audit.configuration.file
        guard path != "-" else { return ([], "The audit log goes to standard output; no recent events to show here.") }
        let tail: String? = try? await NIOThreadPool.singleton.runIfActive {
            guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
            defer { try? handle.close() }
            let size = (try? handle.seekToEnd()) ?? 0
            try? handle.seek(toOffset: size > 65536 ? size - 65536 : 0)
            return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        }
        guard let tail else { return ([], "The audit log file cannot be read.") }
        var events: [[String: String]] = []
        for line in tail.split(separator: "\n").suffix(50).reversed() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
            let shown = ["time", "event", "user", "router"]
            let detail = object.filter { !shown.contains($0.key) }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            events.append([
                "time": object["time"] as? String ?? "", "event": object["event"] as? String ?? "", "user": object["user"] as? String ?? "",
                "router": object["router"] as? String ?? "", "detail": detail,
            ])
        }
        return (events, nil)
    }

    private static func time(_ seconds: Int) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }
}
