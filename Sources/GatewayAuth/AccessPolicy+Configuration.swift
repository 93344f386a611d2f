package import AuthorizationServer
package import GatewayConfig

extension AccessPolicy {
    /// The allow-lists in force for `router` (the global list alone when there is none): the one
    /// place sign-in, refresh and the token check derive them from.
    package init(configuration: GatewayConfiguration, router: RouterConfiguration?) {
        let policies = router?.callPolicy.policies ?? []
        self.init(
            global: AccessRule(configuration.auth?.allow ?? AllowList()), router: router?.allow.map(AccessRule.init),
            policyOrgs: Set(policies.flatMap(\.orgs).map { $0.lowercased() }), policyTeams: Set(policies.flatMap(\.teams).map { $0.lowercased() })
        )
    }
}

extension AccessRule {
    package init(_ list: AllowList) {
        self.init(anyone: list.anyone, users: list.users, orgs: list.orgs, teams: list.teams, groups: list.groups)
    }
}
