package import HTTPTypes
package import Hummingbird
import NIOCore

/// The authorization server's HTML: the consent (and sign-in) page and error pages. Plain forms, no
/// JavaScript; every value that came from a request or a client's metadata is escaped.
package enum AuthPages {
    package static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(character)
            }
        }
        return result
    }

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

    package static func document(title: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title>
        <style>
        body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
        main{max-width:30rem;margin:4rem auto;background:#fff;border-radius:10px;padding:2rem 2.2rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}
        h1{font-size:1.35rem;margin:0 0 1rem}
        dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem;margin:1.2rem 0}
        dt{color:#5b6474}dd{margin:0;word-break:break-all;font-weight:600}
        .note{color:#5b6474;font-size:.9rem}.error{color:#a11;font-weight:600}
        form{margin-top:1.2rem}label{display:block;margin:.6rem 0 .2rem;font-size:.9rem}
        input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;border:1px solid #c5cad3;border-radius:6px}
        button{padding:.6rem 1.1rem;border-radius:6px;border:1px solid #1f6feb;background:#1f6feb;color:#fff;font-size:1rem;cursor:pointer;margin:.8rem .4rem 0 0}
        button.secondary{background:#fff;color:#1f2330;border-color:#c5cad3}
        hr{border:0;border-top:1px solid #e3e6eb;margin:1.4rem 0}
        a{color:#1f6feb}
        </style></head>
        <body><main>\(body)</main></body></html>
        """
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
        let name = escape(consent.clientName ?? consent.clientID)
        let provenance = consent.clientIsVerified
            ? "Its details come from its published client metadata at <strong>\(escape(consent.clientID))</strong>."
            : "The name was supplied by the application when it registered and is not verified; check the redirect host."
        let hidden = """
            <input type="hidden" name="request" value="\(escape(consent.requestID))">
            <input type="hidden" name="csrf" value="\(escape(consent.csrfToken))">
            """
        var actions = ""
        if consent.github {
            actions += """
                <form method="post" action="/authorize/consent">\(hidden)
                <input type="hidden" name="action" value="approve"><input type="hidden" name="provider" value="github">
                <button type="submit">Approve and sign in with GitHub</button></form>
                """
        }
        if consent.local {
            if consent.github { actions += "<hr><p class=\"note\">Or sign in with a gateway account:</p>" }
            actions += """
                <form method="post" action="/authorize/consent">\(hidden)
                <input type="hidden" name="action" value="approve"><input type="hidden" name="provider" value="local">
                \(consent.localError.map { "<p class=\"error\" role=\"alert\">\(escape($0))</p>" } ?? "")
                <label for="username">User name</label><input id="username" type="text" name="username" autocomplete="username" value="\(escape(consent.username ?? ""))" required>
                <label for="password">Password</label><input id="password" type="password" name="password" autocomplete="current-password" required>
                <button type="submit">Approve and sign in</button></form>
                """
        }
        if !consent.github && !consent.local {
            actions += "<p class=\"error\">No sign-in method is configured on this gateway (auth.github or auth.local).</p>"
        }
        actions += """
            <form method="post" action="/authorize/consent">\(hidden)
            <input type="hidden" name="action" value="deny"><button type="submit" class="secondary">Deny</button></form>
            """
        return document(title: "Authorize \(consent.clientName ?? consent.clientID)", body: """
            <h1>Allow <span id="client-name">\(name)</span> to use this MCP server?</h1>
            <dl>
            <dt>Application</dt><dd id="client">\(name)</dd>
            <dt>Returns to</dt><dd id="redirect-host">\(escape(consent.redirectHost))</dd>
            <dt>Resource</dt><dd id="resource">\(escape(consent.resource))</dd>
            <dt>Access</dt><dd id="scope">\(escape(consent.scope))</dd>
            </dl>
            <p class="note">\(provenance) Approve only if you started this connection.</p>
            \(actions)
            """)
    }

    package static func error(_ status: HTTPResponse.Status, title: String, message: String, returnURL: String? = nil) -> Response {
        var body = "<h1>\(escape(title))</h1><p id=\"message\">\(escape(message))</p>"
        if let returnURL {
            body += "<p><a id=\"return\" href=\"\(escape(returnURL))\">Return to the application</a></p>"
        }
        return response(status, html: document(title: title, body: body))
    }
}
