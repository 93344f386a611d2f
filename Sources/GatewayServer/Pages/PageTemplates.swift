import Mustache

/// The HTML of the gateway's own pages, as Mustache templates: `{{value}}` is HTML-escaped, so
/// nothing a request, a client's metadata or the store supplies can become markup. Compiled once.
enum PageTemplates {
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in [("layout", layout), ("admin", admin)] {
            do { try library.register(text, named: name) } catch {
                // The templates are constants of this file: a parse error is a programming error
                // that every test run would show.
                fatalError("page template \(name) does not parse: \(error)")
            }
        }
        return library
    }()

    static func render(_ name: String, _ context: [String: Any]) -> String {
        library.render(context, withTemplate: name) ?? ""
    }

    static let layout = """
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

    static let admin = """
    {{<layout}}{{$body}}
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
    {{/body}}{{/layout}}
    """
}
