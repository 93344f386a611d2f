import Mustache

/// The HTML of every page the gateway serves itself (the consent and error pages, `/`, `/admin`),
/// as Mustache templates compiled once: `{{value}}` is HTML-escaped, so nothing a request, a
/// client's metadata or the store supplies can become markup. No template carries a script; the
/// pages' CSP forbids them anyway.
public enum Pages {
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        let templates = [
            ("page", Templates.page), ("consent", Templates.consent), ("error", Templates.error), ("welcome", Templates.welcome),
            ("wide", Templates.wide), ("admin", Templates.admin), ("connections", Templates.connections), ("connected", Templates.connected),
        ]
        // The templates are constants of this module and PagesTests renders each one; a template
        // that failed to parse is left out, and `render` answers the plain fallback page for it
        // rather than stopping the process on a request.
        for (name, text) in templates {
            try? library.register(text, named: name)
        }
        return library
    }()

    static let fallback = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mcp-gateway</title></head><body><p>This page cannot be shown.</p></body></html>"

    /// `template` rendered with `context` (dictionaries, arrays and strings; leave out a key rather
    /// than store nil: Mustache would print an Optional's description).
    public static func render(_ template: String, _ context: [String: Any]) -> String {
        library.render(context, withTemplate: template) ?? fallback
    }
}

enum Templates {
    static let style = """
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
    """

    /// The narrow card every authorization page sits in; `{{$body}}` is filled by the page.
    static let page = """
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{{title}}</title>
    <style>
    \(style)
    </style></head>
    <body><main>{{$body}}{{/body}}</main></body></html>
    """

    static let consent = """
    {{<page}}{{$body}}
    <h1>Allow <span id="client-name">{{clientName}}</span> to use this MCP server?</h1>
    <dl>
    <dt>Application</dt><dd id="client">{{clientName}}</dd>
    <dt>Returns to</dt><dd id="redirect-host">{{redirectHost}}</dd>
    <dt>Resource</dt><dd id="resource">{{resource}}</dd>
    <dt>Access</dt><dd id="scope">{{scope}}</dd>
    </dl>
    <p class="note">{{#verified}}Its details come from its published client metadata at <strong>{{clientID}}</strong>.{{/verified}}{{^verified}}The name was supplied by the application when it registered and is not verified; check the redirect host.{{/verified}} Approve only if you started this connection.</p>
    {{#github}}<form method="post" action="/authorize/consent"><input type="hidden" name="request" value="{{requestID}}"><input type="hidden" name="csrf" value="{{csrf}}">
    <input type="hidden" name="action" value="approve"><input type="hidden" name="provider" value="github">
    <button type="submit">Approve and sign in with GitHub</button></form>{{/github}}
    {{#local}}{{#github}}<hr><p class="note">Or sign in with a gateway account:</p>{{/github}}
    <form method="post" action="/authorize/consent"><input type="hidden" name="request" value="{{requestID}}"><input type="hidden" name="csrf" value="{{csrf}}">
    <input type="hidden" name="action" value="approve"><input type="hidden" name="provider" value="local">
    {{#localError}}<p class="error" role="alert">{{localError}}</p>{{/localError}}
    <label for="username">User name</label><input id="username" type="text" name="username" autocomplete="username" value="{{username}}" required>
    <label for="password">Password</label><input id="password" type="password" name="password" autocomplete="current-password" required>
    <button type="submit">Approve and sign in</button></form>{{/local}}
    {{#noMethod}}<p class="error">No sign-in method is configured on this gateway (auth.github or auth.local).</p>{{/noMethod}}
    <form method="post" action="/authorize/consent"><input type="hidden" name="request" value="{{requestID}}"><input type="hidden" name="csrf" value="{{csrf}}">
    <input type="hidden" name="action" value="deny"><button type="submit" class="secondary">Deny</button></form>
    {{/body}}{{/page}}
    """

    static let error = """
    {{<page}}{{$body}}<h1>{{title}}</h1><p id="message">{{message}}</p>
    {{#returnURL}}<p><a id="return" href="{{returnURL}}">Return to the application</a></p>{{/returnURL}}{{/body}}{{/page}}
    """

    static let welcome = """
    {{<page}}{{$body}}
    <h1>MCP servers on this gateway</h1>
    <dl>{{#endpoints}}<dt>{{name}}</dt><dd><code>{{url}}</code><br><span class="note">{{access}}</span></dd>{{/endpoints}}{{^endpoints}}<dt>none</dt><dd>no routers are configured</dd>{{/endpoints}}</dl>
    <p class="note">To add one to Claude: Settings → Connectors → Add custom connector, and paste
    its URL. Claude signs in through this gateway when the server needs it.</p>
    {{/body}}{{/page}}
    """

    /// The wide layout of the admin page.
    static let wide = """
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{{title}}</title>
    <style>
    body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
    main{max-width:72rem;margin:2rem auto;background:#fff;border-radius:10px;padding:1.5rem 2rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}
    h1{font-size:1.35rem;margin:0 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
    table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
    th{color:#5b6474;font-weight:600}td.mono{font-family:ui-monospace,monospace;word-break:break-all}
    .note{color:#5b6474;font-size:.9rem}.done{background:#e6f4ea;border-radius:6px;padding:.5rem .8rem}
    form.inline{display:inline;margin:0}button{padding:.3rem .7rem;border-radius:6px;border:1px solid #a11;background:#fff;color:#a11;cursor:pointer}
    header{display:flex;justify-content:space-between;align-items:baseline}
    </style></head>
    <body><main>{{$body}}{{/body}}</main></body></html>
    """

    /// `/connections`: the signed-in user's connections to OAuth-protected upstreams.
    static let connections = """
    {{<page}}{{$body}}
    <h1>Your connections</h1>
    <p class="note">Signed in as <b id="login">{{login}}</b>. Services behind this gateway that call their upstream with your own account:</p>
    {{#done}}<p class="done" id="done">{{done}}</p>{{/done}}
    <dl>{{#services}}<dt>{{name}}</dt><dd id="status-{{name}}">{{#connected}}connected {{since}}
    <form method="post" action="/connections/disconnect"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="service" value="{{name}}"><button type="submit" id="disconnect-{{name}}">Disconnect</button></form>{{/connected}}{{^connected}}not connected <a id="connect-{{name}}" href="/connect/{{name}}">Connect</a>{{/connected}}</dd>
    {{/services}}{{^services}}<dt>none</dt><dd>no service here needs a connection</dd>{{/services}}</dl>
    {{/body}}{{/page}}
    """

    /// The end of a connection: the user returns to their MCP client.
    static let connected = """
    {{<page}}{{$body}}<h1 id="title">Connected to {{service}}</h1>
    <p id="message">Your {{service}} account is connected for <b>{{login}}</b>. Return to your MCP client and try again: it now works with your account.</p>
    <p class="note"><a href="/connections">Your connections</a></p>{{/body}}{{/page}}
    """

    static let admin = """
    {{<wide}}{{$body}}
    <header><h1>mcp-gateway administration</h1>
    <form class="inline" method="post" action="/admin/logout"><input type="hidden" name="csrf" value="{{csrf}}"><span class="note">signed in as <b id="admin-login">{{login}}</b></span> <button type="submit">Sign out</button></form></header>
    {{#done}}<p class="done" id="done">{{done}}</p>{{/done}}
    <h2>Users <span class="note">(signed in within the refresh-token lifetime)</span></h2>
    <table id="users"><tr><th>Login</th><th>Subject</th><th>Last seen</th><th>Sign-ins</th><th></th></tr>
    {{#users}}<tr><td>{{login}}</td><td class="mono">{{subject}}</td><td>{{lastSeen}}</td><td>{{signIns}}</td>
    <td><form class="inline" method="post" action="/admin/action"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="action" value="revoke-user"><input type="hidden" name="target" value="{{login}}"><button type="submit" id="revoke-user-{{login}}">Revoke tokens</button></form></td></tr>
    {{/users}}{{^users}}<tr><td colspan="5" class="note">nobody yet</td></tr>{{/users}}</table>
    <h2>Clients</h2>
    <table id="clients"><tr><th>Client id</th><th>Name</th><th>Registered</th><th>Redirect URIs</th><th></th></tr>
    {{#clients}}<tr><td class="mono">{{clientID}}</td><td>{{name}}</td><td>{{registered}}</td><td class="mono">{{redirectURIs}}</td>
    <td><form class="inline" method="post" action="/admin/action"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="action" value="revoke-client"><input type="hidden" name="target" value="{{clientID}}"><button type="submit">Revoke</button></form></td></tr>
    {{/clients}}{{^clients}}<tr><td colspan="5" class="note">none registered</td></tr>{{/clients}}</table>
    <h2>Sessions</h2>
    <table id="sessions"><tr><th>Session (SHA-256)</th><th>Router</th><th>Subject</th><th>Expires in</th><th></th></tr>
    {{#sessions}}<tr><td class="mono">{{session}}</td><td>{{router}}</td><td class="mono">{{subject}}</td><td>{{expiresIn}}</td>
    <td><form class="inline" method="post" action="/admin/action"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="action" value="end-session"><input type="hidden" name="target" value="{{session}}"><button type="submit">End</button></form></td></tr>
    {{/sessions}}{{^sessions}}<tr><td colspan="5" class="note">none open</td></tr>{{/sessions}}</table>
    <h2>Recent audit events</h2>
    {{#auditNote}}<p class="note">{{auditNote}}</p>{{/auditNote}}
    <table id="audit"><tr><th>Time</th><th>Event</th><th>User</th><th>Router</th><th>Detail</th></tr>
    {{#events}}<tr><td>{{time}}</td><td>{{event}}</td><td>{{user}}</td><td>{{router}}</td><td class="mono">{{detail}}</td></tr>
    {{/events}}</table>
    {{/body}}{{/wide}}
    """
}
