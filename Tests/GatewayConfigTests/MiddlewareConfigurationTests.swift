import GatewayConfig
import Testing

/// `middlewares:` and `routers.<r>.middlewares` as the loader reads them.
@Suite struct MiddlewareConfigurationTests {
    static func yaml(middlewares: String, routerMiddlewares: String = "[limit]") -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    middlewares:
    \(middlewares)
    routers:
      r:
        rule: "PathPrefix(`/r`)"
        service: s
        middlewares: \(routerMiddlewares)
    services:
      s: { http: { url: "http://127.0.0.1:1/mcp" } }
    """ }

    @Test func aRateLimitWithDefaultsAndToolOverrides() throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: Self.yaml(middlewares: """
          limit:
            rateLimit:
              average: 10
              tools:
                "search_*": { average: 2, period: 1m, burst: 4 }
                "write": { average: 1, period: 10s }
        """))
        #expect(configuration.routers[0].middlewares == ["limit"])
        guard case .rateLimit(let limit)? = configuration.middlewares["limit"] else {
            Issue.record("no rate limit")
            return
        }
        // Defaults: per second, burst = average, by user, deny when the store cannot answer.
        #expect(limit.limit == .init(average: 10, period: .seconds(1), burst: 10))
        #expect(limit.by == .user && limit.onStoreError == .deny)
        #expect(limit.limit(forTool: "search_web").limit == .init(average: 2, period: .seconds(60), burst: 4))
        #expect(limit.limit(forTool: "search_web").pattern == "search_*")
        #expect(limit.limit(forTool: "write").limit.interval == .seconds(10))
        // Other tools, and requests that are not tools/call, count against the middleware's limit.
        #expect(limit.limit(forTool: "writer").pattern == nil)
        #expect(limit.limit(forTool: nil).limit.average == 10)
    }

    @Test func everyMistakeIsReportedWithItsPosition() {
        let yaml = Self.yaml(middlewares: """
          limit:
            rateLimit: { average: 0, by: team, onStoreError: maybe }
          empty: {}
        """, routerMiddlewares: "[limit, nope]")
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "m.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("m.yaml:5:27: middlewares.limit.rateLimit.average: must be between 1 and 1000000, got 0"), "\(text)")
            #expect(text.contains("middlewares.limit.rateLimit.by: by must be user, client or ip, got \"team\""), "\(text)")
            #expect(text.contains("middlewares.limit.rateLimit.onStoreError: onStoreError must be allow or deny"), "\(text)")
            #expect(text.contains("middlewares.empty: a middleware needs a kind: rateLimit"), "\(text)")
            #expect(text.contains("m.yaml:11:26: routers.r.middlewares: middleware \"nope\" is not defined (defined: empty, limit)"), "\(text)")
        }
    }

    @Test func globs() {
        #expect(Glob.matches("search_*", "search_web"))
        #expect(Glob.matches("*", ""))
        #expect(Glob.matches("a?c", "abc") && !Glob.matches("a?c", "ac"))
        #expect(Glob.matches("*_admin_*", "x_admin_y") && !Glob.matches("*_admin_*", "x_admin"))
        #expect(!Glob.matches("search", "search_web"))
    }
}
