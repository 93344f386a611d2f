package import HTTPTypes
package import Hummingbird
import NIOCore
import GatewayPages

/// The authorization server's HTML: the consent (and sign-in) page and error pages, rendered from
/// the Mustache templates in GatewayPages (escaped by default). Plain forms, no JavaScript.
package enum AuthPages {
    /// No framing (clickjacking), no scripts, no third-party anything; forms post to this origin.
    package static let securityHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8",
        .cacheControl: "no-store",
        HTTPField.Name("Content-Security-Policy")!: "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
    ]

    package static func response(_ status: HTTPResponse.Status, html: String, extraHeaders: HTTPFields = [:]) -> Response {
        var headers = securityHeaders
        for field in extraHeaders {
            // Cookies add up; any other field replaces the default of the same name.
            if field.name != .setCookie { headers[field.name] = nil }
        }
        headers.append(contentsOf: extraHeaders)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    package struct Consent {
        package var clientName: String?
        package var clientID: String
        package var clientIsVerified: Bool
        package var redirectHost: String
        package var resource: String
        package var scope: String
        package var requestID: String
        package var csrfToken: String
        package var github: Bool
        package var local: Bool
        package var localError: String?
        package var username: String?
    }

    package static func consent(_ consent: Consent) -> String {
        var context: [String: Any] = [
            "title": "Authorize \(consent.clientName ?? consent.clientID)", "clientName": consent.clientName ?? consent.clientID,
            "clientID": consent.clientID, "verified": consent.clientIsVerified, "redirectHost": consent.redirectHost,
            "resource": consent.resource, "scope": consent.scope, "requestID": consent.requestID, "csrf": consent.csrfToken,
            "github": consent.github, "local": consent.local, "noMethod": !consent.github && !consent.local, "username": consent.username ?? "",
        ]
        if let localError = consent.localError { context["localError"] = localError }
        return Pages.render("consent", context)
    }

    package static func error(_ status: HTTPResponse.Status, title: String, message: String, returnURL: String? = nil) -> Response {
        var context: [String: Any] = ["title": title, "message": message]
        if let returnURL { context["returnURL"] = returnURL }
        return response(status, html: Pages.render("error", context))
    }
}
