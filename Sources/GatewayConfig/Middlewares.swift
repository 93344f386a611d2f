/// A named middleware of `middlewares:`, applied by the routers that list it, in their order.
/// Each kind is one case: a new kind adds a case and its stage, and routing does not change.
public enum MiddlewareConfiguration: Sendable, Equatable {
    case rateLimit(RateLimitConfiguration)
}

/// `middlewares.<m>.rateLimit`: requests per period with a burst, counted per caller (a
/// generic cell rate algorithm: `burst` at once, then `average` per `period`), with per-tool
/// limits that replace it for `tools/call` of those tools.
public struct RateLimitConfiguration: Sendable, Equatable {
    /// Whose requests are counted together.
    public enum Key: String, Sendable, Equatable, CaseIterable {
        /// The signed-in user (the token's subject); the client address on `auth: none` routers.
        case user
        /// The OAuth client (`client_id`); the client address on `auth: none` routers.
        case client
        /// The client address (behind trusted proxies: theirs; IPv6 per /64).
        case ip
    }

    /// What to do when the store cannot be asked.
    public enum OnStoreError: String, Sendable, Equatable, CaseIterable {
        /// Let the request through (logged).
        case allow
        /// Refuse it with 503 (logged).
        case deny
    }

    public struct Limit: Sendable, Equatable {
        /// Requests per `period`, sustained.
        public var average: Int { didSet { interval = Self.interval(period, average) } }
        public var period: Duration { didSet { interval = Self.interval(period, average) } }
        /// Requests allowed at once (default: `average`).
        public var burst: Int
        /// The time one request uses up of the allowance (kept: asked on every request).
        public private(set) var interval: Duration

        public init(average: Int, period: Duration = .seconds(1), burst: Int? = nil) {
            self.average = average
            self.period = period
            self.burst = burst ?? average
            self.interval = Self.interval(period, average)
        }

        private static func interval(_ period: Duration, _ average: Int) -> Duration {
            period / max(1, average)
        }
    }

    public var limit: Limit
    public var by: Key
    public var onStoreError: OnStoreError
    /// Per-tool limits by tool name or glob (`*`, `?`), tried in the file's order.
    public var tools: [(pattern: String, limit: Limit)]

    public init(limit: Limit, by: Key = .user, onStoreError: OnStoreError = .deny, tools: [(pattern: String, limit: Limit)] = []) {
        self.limit = limit
        self.by = by
        self.onStoreError = onStoreError
        self.tools = tools
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.limit == rhs.limit && lhs.by == rhs.by && lhs.onStoreError == rhs.onStoreError
            && lhs.tools.map(\.pattern) == rhs.tools.map(\.pattern) && lhs.tools.map(\.limit) == rhs.tools.map(\.limit)
    }

    /// The limit for `tools/call` of `tool` (its pattern, or nil for the middleware's own limit).
    public func limit(forTool tool: String?) -> (pattern: String?, limit: Limit) {
        if let tool, let match = tools.first(where: { Glob.matches($0.pattern, tool) }) { return (match.pattern, match.limit) }
        return (nil, limit)
    }
}

/// Shell-style name patterns: `*` any run of characters, `?` one character, anything else itself.
public enum Glob {
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern.unicodeScalars), n = Array(name.unicodeScalars)
        var pi = 0, ni = 0, star = -1, mark = 0
        while ni < n.count {
            if pi < p.count, p[pi] == "?" || p[pi] == n[ni] {
                pi += 1
                ni += 1
            } else if pi < p.count, p[pi] == "*" {
                star = pi
                mark = ni
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ni = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}
