/// Routers ordered the way Traefik orders them: highest priority first (default priority is the
/// rule's length, so more specific rules win), ties broken by name for a stable order.
public struct RouteTable<Target: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var name: String
        public var rule: Rule
        public var priority: Int
        public var target: Target

        public init(name: String, rule: Rule, priority: Int, target: Target) {
            self.name = name
            self.rule = rule
            self.priority = priority
            self.target = target
        }
    }

    public let entries: [Entry]
    /// Whether every rule reads only the host and path: then the same host and path always lead
    /// to the same entry, and a connection may remember where its last request went.
    public let routesByHostAndPath: Bool

    public init(_ entries: [Entry]) {
        self.entries = entries.sorted { lhs, rhs in
            lhs.priority != rhs.priority ? lhs.priority > rhs.priority : lhs.name < rhs.name
        }
        self.routesByHostAndPath = entries.allSatisfy(\.rule.readsOnlyHostAndPath)
    }

    public func match(_ request: some RoutableRequest) -> Entry? {
        entries.first { $0.rule.matches(request) }
    }
}

extension Rule {
    /// The path of the router's MCP endpoint: `/mcp` under the rule's path prefix
    /// (``PathPrefix(`/time`)`` → `/time/mcp`), the exact `Path` when the rule names one,
    /// and `/mcp` for host-only rules.
    public var mcpEndpointPath: String {
        for matcher in requiredMatchers {
            if case .path(let path) = matcher { return path }
        }
        for matcher in requiredMatchers {
            if case .pathPrefix(let prefix) = matcher {
                var trimmed = prefix
                while trimmed.hasSuffix("/") { trimmed.removeLast() }
                return trimmed + "/mcp"
            }
        }
        return "/mcp"
    }
}
