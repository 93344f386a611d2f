import GatewayPages
import Testing

/// The page templates escape what they are given: a hostile client name, resource or message is
/// text, never markup; sections appear only when their value is there.
@Suite struct PagesTests {
    static let hostile = #"<script>alert("x")</script>&'"#

    @Test func theConsentPageEscapesEveryValueAndShowsOnlyTheConfiguredSignIns() {
        let page = Pages.render("consent", [
            "title": "Authorize \(Self.hostile)", "clientName": Self.hostile, "clientID": "mcpgw-1", "verified": false,
            "redirectHost": "evil\"><b>.example", "resource": "https://gw/r/mcp", "scope": "mcp", "requestID": "req\"1", "csrf": "c<s>rf",
            "github": false, "local": true, "noMethod": false, "username": "al\"ice", "localError": "<i>wrong</i>",
        ])
        #expect(!page.contains("<script>") && !page.contains("<b>") && !page.contains("<i>"))
        #expect(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"))
        #expect(page.contains(#"value="req&quot;1""#) && page.contains(#"value="c&lt;s&gt;rf""#) && page.contains(#"value="al&quot;ice""#))
        #expect(page.contains(#"name="provider" value="local""#) && !page.contains(#"value="github""#))
        #expect(page.contains("is not verified") && page.contains(#"role="alert""#))
    }

    @Test func theErrorPageLinksBackOnlyWhenThereIsSomewhereToGo() {
        let plain = Pages.render("error", ["title": "Denied", "message": Self.hostile])
        #expect(plain.contains("&lt;script&gt;") && !plain.contains(#"id="return""#))
        let linked = Pages.render("error", ["title": "Denied", "message": "m", "returnURL": #"https://app.example/cb?error=x&state="><s>"#])
        #expect(linked.contains(#"href="https://app.example/cb?error=x&amp;state=&quot;&gt;&lt;s&gt;""#))
    }

    @Test func theWelcomePageListsEndpointsOrSaysThereAreNone() {
        let listed = Pages.render("welcome", ["title": "mcp-gateway", "endpoints": [["name": "time", "url": "http://gw/time/mcp", "access": "public"]]])
        #expect(listed.contains("<code>http://gw/time/mcp</code>") && !listed.contains("no routers"))
        let empty = Pages.render("welcome", ["title": "mcp-gateway", "endpoints": [[String: String]]()])
        #expect(empty.contains("no routers are configured"))
    }

    @Test func everyTemplateParsesAndAnUnknownOneGetsTheFallbackPage() {
        for name in ["consent", "error", "welcome", "admin"] {
            #expect(Pages.render(name, ["title": "t"]) != Pages.render("no-such-template", [:]), "\(name)")
        }
        #expect(Pages.render("no-such-template", [:]).contains("This page cannot be shown."))
    }
}
