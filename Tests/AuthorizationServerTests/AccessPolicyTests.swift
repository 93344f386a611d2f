import AuthorizationServer
import Testing

@Suite struct AccessPolicyTests {
    @Test func emptyListAdmitsNobody() {
        #expect(!AccessRule().admits(UserIdentity(login: "octocat", orgs: ["acme"], teams: ["acme/platform"])))
        #expect(AccessRule(anyone: true).admits(UserIdentity(login: "anybody")))
    }

    @Test func loginsOrgsAndTeamsMatchWithoutCase() {
        let rule = AccessRule(users: ["OctoCat"], orgs: ["ACME"], teams: ["acme/Platform"])
        #expect(rule.admits(UserIdentity(login: "octocat")))
        #expect(rule.admits(UserIdentity(login: "someone", orgs: ["acme"])))
        #expect(rule.admits(UserIdentity(login: "someone", orgs: [], teams: ["ACME/platform"])))
        #expect(!rule.admits(UserIdentity(login: "someone", orgs: ["acme-evil"], teams: ["acme/platform-x"])))
        // Not a prefix or substring match.
        #expect(!rule.admits(UserIdentity(login: "octocat2")))
        // Memberships not fetched cannot admit.
        #expect(!rule.admits(UserIdentity(login: "someone", orgs: nil, teams: nil)))
    }

    @Test func routerListNarrowsTheGlobalOne() {
        let policy = AccessPolicy(global: AccessRule(orgs: ["acme"]), router: AccessRule(users: ["octocat"]))
        #expect(policy.admits(UserIdentity(login: "octocat", orgs: ["acme"])))
        #expect(!policy.admits(UserIdentity(login: "hubot", orgs: ["acme"])))
        #expect(!policy.admits(UserIdentity(login: "octocat", orgs: ["other"])))
        #expect(AccessPolicy(global: AccessRule(orgs: ["acme"]), router: nil).admits(UserIdentity(login: "x", orgs: ["acme"])))
    }

    @Test func membershipLookupsOnlyWhenNeeded() {
        #expect(!AccessPolicy(global: AccessRule(users: ["a"]), router: nil).needsOrgs)
        #expect(!AccessPolicy(global: AccessRule(users: ["a"]), router: nil).needsTeams)
        #expect(AccessPolicy(global: AccessRule(users: ["a"]), router: AccessRule(teams: ["o/t"])).needsTeams)
        #expect(!AccessPolicy(global: AccessRule(anyone: true, orgs: ["x"]), router: nil).needsOrgs)
    }
}
