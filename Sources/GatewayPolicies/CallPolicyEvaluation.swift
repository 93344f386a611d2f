package import AuthorizationServer
package import GatewayConfig

/// A router's `CallPolicy` compiled once per configuration generation: patterns compiled, names
/// lower-cased. `view(for:)` gives one caller's decisions.
package struct CompiledCallPolicy: Sendable {
    struct CompiledRules: Sendable {
        /// Nil: not given.
        var allow: NamePatterns?
        var deny: NamePatterns

        init(_ rules: CallPolicy.Rules) {
            allow = rules.allow.map(NamePatterns.init)
            deny = NamePatterns(rules.deny)
        }
    }

    struct CompiledIdentityPolicy: Sendable {
        var applies: AccessRule
        var rules: [CallPolicy.Kind: CompiledRules]
    }

    private let base: [CallPolicy.Kind: CompiledRules]
    private let policies: [CompiledIdentityPolicy]
    /// No rules at all: nobody's view is restricted (and nothing needs evaluating).
    package let isEmpty: Bool
    /// Organisations and teams the policies name (lower-cased): the caller's memberships the
    /// token check must establish for them, beyond what the allow-lists need.
    package let organisations: Set<String>
    package let teams: Set<String>

    package init(_ policy: CallPolicy) {
        base = policy.rules.mapValues(CompiledRules.init)
        policies = policy.policies.map { entry in
            CompiledIdentityPolicy(applies: AccessRule(users: entry.users, orgs: entry.orgs, teams: entry.teams, groups: entry.groups), rules: entry.rules.mapValues(CompiledRules.init))
        }
        isEmpty = policy.isEmpty
        organisations = policies.reduce(into: Set<String>()) { $0.formUnion($1.applies.orgs) }
        teams = policies.reduce(into: Set<String>()) { $0.formUnion($1.applies.teams) }
    }

    /// Whether the caller's organisations or teams matter to any policy.
    package var needsMembership: Bool { !organisations.isEmpty || !teams.isEmpty }

    /// What `identity` may see and call (nil identity: an `auth: none` router's anonymous caller,
    /// to whom only the router's own rules apply).
    package func view(for identity: UserIdentity?) -> CallerView {
        guard !isEmpty else { return CallerView(kinds: [:]) }
        // A policy naming organisations or teams the caller's identity does not record (not
        // looked up: a sign-in from before the policy, no membership token) may or may not apply:
        // its denials apply, its allowances do not. The gate fails closed.
        var matching: [CompiledIdentityPolicy] = []
        var undecided: [CompiledIdentityPolicy] = []
        if let identity {
            for policy in policies {
                if policy.applies.admits(identity) {
                    matching.append(policy)
                } else if (identity.orgs == nil && !policy.applies.orgs.isEmpty) || (identity.teams == nil && !policy.applies.teams.isEmpty) {
                    undecided.append(policy)
                }
            }
        }
        var kinds: [CallPolicy.Kind: CallerView.KindView] = [:]
        for kind in CallPolicy.Kind.allCases {
            let own = base[kind]
            var view = CallerView.KindView(allowsAll: own?.allow == nil, allow: [], deny: [])
            if let allow = own?.allow, !allow.isEmpty { view.allow.append(allow) }
            if let deny = own?.deny, !deny.isEmpty { view.deny.append(deny) }
            for policy in matching {
                guard let rules = policy.rules[kind] else { continue }
                if let allow = rules.allow, !allow.isEmpty { view.allow.append(allow) }
                if !rules.deny.isEmpty { view.deny.append(rules.deny) }
            }
            for policy in undecided {
                if let deny = policy.rules[kind]?.deny, !deny.isEmpty { view.deny.append(deny) }
            }
            if !view.isUnrestricted { kinds[kind] = view }
        }
        return CallerView(kinds: kinds)
    }
}

/// One caller's decisions on one router: which tools, resources and prompts exist for them.
package struct CallerView: Sendable, Equatable {
    struct KindView: Sendable, Equatable {
        /// The router gave no `allow` for this kind: everything is allowed unless denied.
        var allowsAll: Bool
        var allow: [NamePatterns]
        var deny: [NamePatterns]

        var isUnrestricted: Bool { allowsAll && deny.isEmpty }

        func admits(_ name: String) -> Bool {
            if deny.contains(where: { $0.matches(name) }) { return false }
            return allowsAll || allow.contains { $0.matches(name) }
        }
    }

    /// Only the kinds that restrict something.
    let kinds: [CallPolicy.Kind: KindView]

    /// Whether the caller sees everything (no list needs filtering, no call can be refused).
    package var isUnrestricted: Bool { kinds.isEmpty }

    package func restricts(_ kind: CallPolicy.Kind) -> Bool { kinds[kind] != nil }

    package func admits(_ kind: CallPolicy.Kind, _ name: String) -> Bool {
        kinds[kind]?.admits(name) ?? true
    }

    /// The kinds whose rules differ between two views of one caller (after a reload): what the
    /// caller sees of them may have changed.
    package func changedKinds(from old: CallerView) -> [CallPolicy.Kind] {
        CallPolicy.Kind.allCases.filter { kinds[$0] != old.kinds[$0] }
    }
}
