import GatewayRouting
import Testing

struct FakeRequest: RoutableRequest {
    var method = "POST"
    var host = "example.com"
    var path = "/"
    var queryItems: [(name: String, value: String)] = []
    var headers: [String: [String]] = [:]

    func headerValues(_ name: String) -> [String] { headers[name.lowercased()] ?? [] }
}

@Suite struct RuleMatchingTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var rule: String
        var method = "POST"
        var host = "example.com"
        var path = "/"
        var headers: [String: [String]] = [:]
        var query: [(String, String)] = []
        var expected: Bool
        var testDescription: String { "\(rule) ~ \(method) \(host)\(path) → \(expected)" }
    }

    static let cases: [Case] = [
        Case(rule: "PathPrefix(`/time`)", path: "/time/mcp", expected: true),
        Case(rule: "PathPrefix(`/time`)", path: "/notes/mcp", expected: false),
        Case(rule: "Host(`a.example.com`)", host: "a.example.com", expected: true),
        Case(rule: "Host(`A.Example.com`)", host: "a.example.com", expected: true),
        Case(rule: "Host(`a.example.com`)", host: "b.example.com", expected: false),
        Case(rule: "HostRegexp(`^[a-z]+\\.example\\.com$`)", host: "mcp.example.com", expected: true),
        Case(rule: "HostRegexp(`^[a-z]+\\.example\\.com$`)", host: "evil.com", expected: false),
        Case(rule: "Path(`/exact`)", path: "/exact", expected: true),
        Case(rule: "Path(`/exact`)", path: "/exact/more", expected: false),
        Case(rule: "PathRegexp(`^/v[0-9]+/mcp$`)", path: "/v2/mcp", expected: true),
        Case(rule: "Method(`get`)", method: "GET", expected: true),
        Case(rule: "Method(`GET`)", method: "POST", expected: false),
        Case(rule: "Header(`X-Tenant`, `acme`)", headers: ["x-tenant": ["acme"]], expected: true),
        Case(rule: "Header(`X-Tenant`, `acme`)", headers: ["x-tenant": ["other"]], expected: false),
        Case(rule: "HeaderRegexp(`X-Tenant`, `^ac`)", headers: ["x-tenant": ["acme"]], expected: true),
        Case(rule: "Query(`debug`)", query: [("debug", "")], expected: true),
        Case(rule: "Query(`mode`, `fast`)", query: [("mode", "slow")], expected: false),
        Case(rule: "Host(`a.com`) && PathPrefix(`/x`)", host: "a.com", path: "/x/mcp", expected: true),
        Case(rule: "Host(`a.com`) && PathPrefix(`/x`)", host: "b.com", path: "/x/mcp", expected: false),
        Case(rule: "Host(`a.com`) || Host(`b.com`)", host: "b.com", expected: true),
        Case(rule: "!Host(`a.com`)", host: "b.com", expected: true),
        Case(rule: "!Host(`a.com`)", host: "a.com", expected: false),
        Case(rule: "(Host(`a.com`) || Host(`b.com`)) && !PathPrefix(`/admin`)", host: "a.com", path: "/admin/x", expected: false),
        Case(rule: "(Host(`a.com`) || Host(`b.com`)) && !PathPrefix(`/admin`)", host: "a.com", path: "/mcp", expected: true),
        // && binds tighter than ||, as in Traefik.
        Case(rule: "Host(`a.com`) || Host(`b.com`) && PathPrefix(`/x`)", host: "a.com", path: "/y", expected: true),
        Case(rule: "Host(`a.com`) || Host(`b.com`) && PathPrefix(`/x`)", host: "b.com", path: "/y", expected: false),
        Case(rule: "Host(\"quoted.com\")", host: "quoted.com", expected: true),
    ]

    @Test(arguments: cases)
    func matches(_ testCase: Case) throws {
        let rule = try Rule(parsing: testCase.rule)
        let request = FakeRequest(
            method: testCase.method, host: testCase.host, path: testCase.path,
            queryItems: testCase.query.map { (name: $0.0, value: $0.1) }, headers: testCase.headers
        )
        #expect(rule.matches(request) == testCase.expected)
    }
}

@Suite struct RuleSyntaxTests {
    struct Bad: CustomTestStringConvertible, Sendable {
        var rule: String
        var offset: Int
        var fragment: String
        var testDescription: String { rule }
    }

    static let bad: [Bad] = [
        Bad(rule: "", offset: 0, fragment: "empty"),
        Bad(rule: "PathPrefix(/time)", offset: 11, fragment: "quoted argument"),
        Bad(rule: "Hots(`a.com`)", offset: 0, fragment: "unknown matcher \"Hots\""),
        Bad(rule: "Host(`a.com`) &&", offset: 16, fragment: "matcher was expected"),
        Bad(rule: "Host(`a.com`", offset: 12, fragment: "to close Host("),
        Bad(rule: "(Host(`a.com`)", offset: 14, fragment: "missing \")\""),
        Bad(rule: "Host(`a.com`, `b.com`)", offset: 0, fragment: "takes 1 argument"),
        Bad(rule: "PathPrefix(`time`)", offset: 12, fragment: "must start with \"/\""),
        Bad(rule: "HostRegexp(`[`)", offset: 12, fragment: "invalid regular expression"),
        Bad(rule: "Host(`a.com`) Host(`b.com`)", offset: 14, fragment: "expected \"&&\""),
        Bad(rule: "Host(`a.com", offset: 5, fragment: "unterminated"),
        Bad(rule: "ClientIP(`10.0.0.0/8`)", offset: 0, fragment: "supported: Host"),
    ]

    @Test(arguments: bad)
    func rejects(_ bad: Bad) {
        do {
            _ = try Rule(parsing: bad.rule)
            Issue.record("\(bad.rule) should not parse")
        } catch {
            #expect(error.offset == bad.offset, "\(error)")
            #expect(error.message.contains(bad.fragment), "\(error.message)")
        }
    }
}

@Suite struct RouteTableTests {
    @Test func priorityDefaultsToRuleLengthSoSpecificRulesWin() throws {
        let general = try Rule(parsing: "PathPrefix(`/a`)")
        let specific = try Rule(parsing: "PathPrefix(`/a/b`)")
        let table = RouteTable([
            .init(name: "general", rule: general, priority: "PathPrefix(`/a`)".count, target: "general"),
            .init(name: "specific", rule: specific, priority: "PathPrefix(`/a/b`)".count, target: "specific"),
        ])
        #expect(table.match(FakeRequest(path: "/a/b/mcp"))?.target == "specific")
        #expect(table.match(FakeRequest(path: "/a/mcp"))?.target == "general")
        #expect(table.match(FakeRequest(path: "/c")) == nil)
    }

    @Test func aTableRoutesByHostAndPathOnlyWhenNoRuleReadsAnythingElse() throws {
        func table(_ rules: [String]) throws -> RouteTable<String> {
            try RouteTable(rules.enumerated().map { index, text in .init(name: "r\(index)", rule: try Rule(parsing: text), priority: 1, target: text) })
        }
        #expect(try table(["PathPrefix(`/a`)", "Host(`x.example`) && !Path(`/b`)", "HostRegexp(`^.+\\.example$`) || PathRegexp(`^/c`)"]).routesByHostAndPath)
        // One rule reading a header, the method or the query anywhere (even under `!` or `||`)
        // makes the same host and path able to lead elsewhere: nothing may be remembered.
        for other in ["Header(`X-Tenant`, `a`)", "!Method(`GET`)", "PathPrefix(`/d`) || Query(`v`, `1`)", "HeaderRegexp(`X-T`, `^a`) && PathPrefix(`/e`)"] {
            #expect(try !table(["PathPrefix(`/a`)", other]).routesByHostAndPath, "\(other)")
        }
    }

    @Test func explicitPriorityAndNameBreakTies() throws {
        let rule = try Rule(parsing: "PathPrefix(`/a`)")
        let table = RouteTable([
            .init(name: "zeta", rule: rule, priority: 5, target: "zeta"),
            .init(name: "alpha", rule: rule, priority: 5, target: "alpha"),
            .init(name: "low", rule: rule, priority: 1, target: "low"),
        ])
        #expect(table.entries.map(\.name) == ["alpha", "zeta", "low"])
    }

    @Test(arguments: [
        ("PathPrefix(`/time`)", "/time/mcp"),
        ("PathPrefix(`/time/`)", "/time/mcp"),
        ("Host(`notes.example.com`)", "/mcp"),
        ("Host(`a.com`) && PathPrefix(`/x`)", "/x/mcp"),
        ("Path(`/custom/endpoint`)", "/custom/endpoint"),
        ("Host(`a.com`) || PathPrefix(`/x`)", "/mcp"),
    ])
    func mcpEndpointPath(rule: String, expected: String) throws {
        #expect(try Rule(parsing: rule).mcpEndpointPath == expected)
    }
}
