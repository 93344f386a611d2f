/// What the identity provider knows about a user: enough to evaluate allow-lists.
public struct UserIdentity: Sendable, Equatable {
    public var login: String
    /// Organisation logins; nil when not fetched (not needed by the lists in force).
    public var orgs: [String]?
    /// Teams as `org/team-slug`; nil when not fetched.
    public var teams: [String]?
    /// Groups an external issuer's token names (`groupsClaim`); always known: empty for
    /// everyone else.
    public var groups: [String]

    public init(login: String, orgs: [String]? = nil, teams: [String]? = nil, groups: [String] = []) {
        self.login = login
        self.orgs = orgs
        self.teams = teams
        self.groups = groups
    }
}

/// An allow-list in force (`users`, `orgs`, `teams`, or `anyone`). Names compare without regard to
/// case, as GitHub's do. An empty list admits nobody: opening a route to everyone must be written
/// as `anyone: true`.
public struct AccessRule: Sendable, Equatable {
    public var anyone: Bool
    public var users: Set<String>
    public var orgs: Set<String>
    public var teams: Set<String>
    public var groups: Set<String>

    public init(anyone: Bool = false, users: [String] = [], orgs: [String] = [], teams: [String] = [], groups: [String] = []) {
        self.anyone = anyone
        self.users = Set(users.map { $0.lowercased() })
        self.orgs = Set(orgs.map { $0.lowercased() })
        self.teams = Set(teams.map { $0.lowercased() })
        self.groups = Set(groups.map { $0.lowercased() })
    }

    /// Whether evaluating this rule needs the user's organisations / teams (each an extra GitHub
    /// call, made only when a list names them).
    public var needsOrgs: Bool { !anyone && !orgs.isEmpty }
    public var needsTeams: Bool { !anyone && !teams.isEmpty }

    public func admits(_ user: UserIdentity) -> Bool {
        if anyone { return true }
        if users.contains(user.login.lowercased()) { return true }
        if let orgs = user.orgs, orgs.contains(where: { self.orgs.contains($0.lowercased()) }) { return true }
        if let teams = user.teams, teams.contains(where: { self.teams.contains($0.lowercased()) }) { return true }
        if !groups.isEmpty, user.groups.contains(where: { groups.contains($0.lowercased()) }) { return true }
        return false
    }
}

/// The global list and a router's own: the router's list, when present, narrows the global one —
/// a user must pass both.
public struct AccessPolicy: Sendable, Equatable {
    public var global: AccessRule
    public var router: AccessRule?
    /// Organisations and teams (lower-cased) the router's tool, resource and prompt policies
    /// name: they admit nobody, but sign-in records these memberships and the token check
    /// establishes them, so the policies can be evaluated.
    public var policyOrgs: Set<String>
    public var policyTeams: Set<String>

    public init(global: AccessRule, router: AccessRule?, policyOrgs: Set<String> = [], policyTeams: Set<String> = []) {
        self.global = global
        self.router = router
        self.policyOrgs = policyOrgs
        self.policyTeams = policyTeams
    }

    public var needsOrgs: Bool { global.needsOrgs || (router?.needsOrgs ?? false) || !policyOrgs.isEmpty }
    public var needsTeams: Bool { global.needsTeams || (router?.needsTeams ?? false) || !policyTeams.isEmpty }
    /// Whether the call policies need memberships, whatever the allow-lists decide.
    public var callPoliciesNeedMembership: Bool { !policyOrgs.isEmpty || !policyTeams.isEmpty }
    /// Whether any list names orgs or teams (GitHub's `read:org`, membership checks).
    public var needsMembership: Bool { needsOrgs || needsTeams }

    public func admits(_ user: UserIdentity) -> Bool {
        global.admits(user) && (router?.admits(user) ?? true)
    }
}
