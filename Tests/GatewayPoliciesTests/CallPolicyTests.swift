import AuthorizationServer
import GatewayConfig
import GatewayPolicies
import MCPMessages
import NIOCore
import Testing

/// Policy decisions as the issue states them: the router's rules or a matching policy's allow
/// admit, any applicable deny hides, deny wins; and list answers filtered in their bytes.
@Suite struct CallPolicyTests {
    /// The example of the documentation: get_/list_ for everyone but no *_secret, everything for
    /// acme/sre, no restart_* for intern-bot.
    static let example = CompiledCallPolicy(CallPolicy(
        rules: [.tools: .init(allow: ["get_*", "list_*"], deny: ["*_secret"])],
        policies: [
            .init(teams: ["acme/sre"], rules: [.tools: .init(allow: ["*"])]),
            .init(users: ["intern-bot"], rules: [.tools: .init(deny: ["restart_*"])]),
        ]
    ))

    @Test func theRouterRulesAndMatchingPoliciesDecideAndDenyWins() {
        let anyone = Self.example.view(for: UserIdentity(login: "alice", orgs: [], teams: []))
        #expect(anyone.admits(.tools, "get_time") && anyone.admits(.tools, "list_zones"))
        #expect(!anyone.admits(.tools, "restart_service") && !anyone.admits(.tools, "get_secret"))
        let sre = Self.example.view(for: UserIdentity(login: "bob", orgs: ["acme"], teams: ["ACME/SRE"]))
        #expect(sre.admits(.tools, "restart_service"))
        #expect(!sre.admits(.tools, "get_secret"), "the router's deny applies to everyone")
        let intern = Self.example.view(for: UserIdentity(login: "Intern-Bot", teams: ["acme/sre"]))
        #expect(intern.admits(.tools, "get_time") && !intern.admits(.tools, "restart_service"), "all matching policies apply")
        #expect(anyone.admits(.prompts, "anything") && anyone.admits(.resources, "file:///x"), "kinds without rules admit everything")
        let anonymous = Self.example.view(for: nil)
        #expect(anonymous.admits(.tools, "get_time") && !anonymous.admits(.tools, "restart_service"))
    }

    @Test func aPolicyWhoseTeamsAreUnknownDeniesButNeverAllows() {
        // Signed in before the policy existed, no membership token: teams not recorded.
        let unknown = Self.example.view(for: UserIdentity(login: "carol"))
        #expect(!unknown.admits(.tools, "restart_service"), "the sre allowance needs the team")
        let denyByTeam = CompiledCallPolicy(CallPolicy(policies: [.init(teams: ["acme/contractors"], rules: [.tools: .init(allow: ["extra"], deny: ["delete_*"])])]))
        #expect(!denyByTeam.view(for: UserIdentity(login: "carol")).admits(.tools, "delete_all"), "unknown teams: the denial applies")
        #expect(denyByTeam.view(for: UserIdentity(login: "carol", orgs: [], teams: [])).admits(.tools, "delete_all"), "known to be in no team")
        #expect(!denyByTeam.view(for: UserIdentity(login: "carol", orgs: [], teams: ["acme/contractors"])).admits(.tools, "delete_all"))
    }

    @Test func noRulesMeansNothingIsEvaluated() {
        let open = CompiledCallPolicy(CallPolicy())
        #expect(open.isEmpty && open.view(for: UserIdentity(login: "x")).isUnrestricted)
        let denyOnlyForOthers = CompiledCallPolicy(CallPolicy(policies: [.init(users: ["eve"], rules: [.tools: .init(deny: ["*"])])]))
        #expect(denyOnlyForOthers.view(for: UserIdentity(login: "alice")).isUnrestricted)
        #expect(!denyOnlyForOthers.view(for: UserIdentity(login: "eve")).admits(.tools, "t"))
        #expect(CompiledCallPolicy(CallPolicy(policies: [.init(teams: ["a/b"], rules: [.tools: .init(deny: ["*"])])])).teams == ["a/b"])
    }

    @Test func globsMatchLikeAShell() {
        let patterns = NamePatterns(["get_*", "a?c", "*_secret", "exact", "file:///docs/*", "x*y*z", "é?"])
        for name in ["get_", "get_time", "abc", "aéc", "top_secret", "exact", "file:///docs/a/b", "xyz", "x1y2z", "x_y_y_z", "éa", "éé"] {
            #expect(patterns.matches(name), "\(name)")
        }
        for name in ["ge", "ac", "abbc", "secret", "exac", "exactly", "file:///doc", "xy", "xzy", "é", "Get_time", ""] {
            #expect(!patterns.matches(name), "\(name)")
        }
        #expect(NamePatterns(["*"]).matches("") && NamePatterns(["**"]).matches("anything"))
    }

    @Test func aListAnswerLosesWhatTheCallerMayNotSeeAndKeepsTheRestAsWritten() throws {
        let view = Self.example.view(for: UserIdentity(login: "alice"))
        let listing = try #require(PolicedMethods.listing("tools/list"))
        let body = #"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"get_time","inputSchema":{"type":"object"}} , {"name":"restart_service"},{"name":"list_zones","x":[1, 2.50]},{"noname":1}],"nextCursor":"c2"}}"#
        let page = try #require(ListFiltering.filter(ByteBuffer(string: body), listing: listing, view: view, markPrivate: false))
        #expect(String(buffer: page.message) == #"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"get_time","inputSchema":{"type":"object"}},{"name":"list_zones","x":[1, 2.50]}],"nextCursor":"c2"}}"#)
        #expect(page.kept == 2 && page.removed == 2 && page.nextCursor == "c2")

        let modern = #"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","cacheScope":"public","tools":[{"name":"restart_x"}]}}"#
        let hidden = try #require(ListFiltering.filter(ByteBuffer(string: modern), listing: listing, view: view, markPrivate: true))
        #expect(String(buffer: hidden.message) == #"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","cacheScope":"private","tools":[]}}"#)
        #expect(hidden.kept == 0 && hidden.nextCursor == nil)
        let noScope = #"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"restart_x"},{"name":"get_a"}]}}"#
        let marked = try #require(ListFiltering.filter(ByteBuffer(string: noScope), listing: listing, view: view, markPrivate: true))
        #expect(String(buffer: marked.message) == #"{"jsonrpc":"2.0","id":1,"result":{"cacheScope":"private","tools":[{"name":"get_a"}]}}"#)

        let untouched = #"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_a"}]}}"#
        let same = try #require(ListFiltering.filter(ByteBuffer(string: untouched), listing: listing, view: view, markPrivate: true))
        #expect(String(buffer: same.message) == untouched && same.removed == 0)
        let error = #"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}"#
        #expect(try String(buffer: #require(ListFiltering.filter(ByteBuffer(string: error), listing: listing, view: view, markPrivate: true)).message) == error)
        #expect(ListFiltering.filter(ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"result":{}}"#), listing: listing, view: view, markPrivate: false) == nil)
    }

    @Test func resourceTemplatesAndCompletionsArePolicedByURIAndName() throws {
        let policy = CompiledCallPolicy(CallPolicy(rules: [.resources: .init(deny: ["file:///private/*"]), .prompts: .init(allow: ["public_*"])]))
        let view = policy.view(for: nil)
        let templates = try #require(PolicedMethods.listing("resources/templates/list"))
        let body = #"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"file:///private/{name}"},{"uriTemplate":"file:///docs/{name}"}]}}"#
        let page = try #require(ListFiltering.filter(ByteBuffer(string: body), listing: templates, view: view, markPrivate: false))
        #expect(page.kept == 1 && String(buffer: page.message).contains("docs") && !String(buffer: page.message).contains("private"))
        let completion = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"secret_prompt"},"argument":{"name":"a","value":""}}}"#)
        let target = try #require(PolicedMethods.target(of: completion))
        #expect(target.kind == .prompts && target.name == "secret_prompt" && !view.admits(target.kind, "secret_prompt"))
        let read = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///private/key"}}"#)
        #expect(try #require(PolicedMethods.target(of: read)).name == "file:///private/key")
        #expect(!view.admits(.resources, "file:///private/key") && view.admits(.resources, "file:///docs/a"))
    }
}
