/// What a router lets its callers see and call: `routers.<r>.tools`, `resources` and `prompts`
/// (for everyone), and `routers.<r>.policies` (for the identities they name). An item is visible
/// and callable when the router's rules admit it or a matching policy's `allow` does, and no rule
/// that applies names it under `deny`: deny wins.
public struct CallPolicy: Sendable, Equatable {
    /// The three kinds of things a client lists and calls by name.
    public enum Kind: String, Sendable, CaseIterable {
        case tools
        /// By URI (resources and resource templates).
        case resources
        case prompts
    }

    /// `allow` and `deny` name globs (`*`, `?`) of one kind.
    public struct Rules: Sendable, Equatable {
        /// Nil: not given (on the router: everything; in a policy: nothing more).
        public var allow: [String]?
        public var deny: [String]

        public init(allow: [String]? = nil, deny: [String] = []) {
            self.allow = allow
            self.deny = deny
        }
    }

    /// One entry of `policies`: rules for the users, organisations and teams it names.
    public struct IdentityPolicy: Sendable, Equatable {
        public var users: [String]
        public var orgs: [String]
        public var teams: [String]
        /// Groups of external JWT callers (`auth.jwt.issuers.<i>.groupsClaim`).
        public var groups: [String]
        public var rules: [Kind: Rules]

        public init(users: [String] = [], orgs: [String] = [], teams: [String] = [], groups: [String] = [], rules: [Kind: Rules] = [:]) {
            self.users = users
            self.orgs = orgs
            self.teams = teams
            self.groups = groups
            self.rules = rules
        }
    }

    /// The router's own rules, by kind (a kind not given admits everything of it).
    public var rules: [Kind: Rules]
    public var policies: [IdentityPolicy]

    public init(rules: [Kind: Rules] = [:], policies: [IdentityPolicy] = []) {
        self.rules = rules
        self.policies = policies
    }

    /// No rules and no policies: every caller sees and calls everything.
    public var isEmpty: Bool { rules.isEmpty && policies.isEmpty }
}
