package import AuthorizationServer
import Foundation
package import GatewayStore
package import Logging

/// Re-checks GitHub org and team membership after sign-in, with the operator's `read:org`
/// membership token (GitHub's token of the user is never kept). A check is trusted for
/// `membershipTTL` and shared through the store (`membership:<subject>`); when GitHub cannot be
/// asked, the last known answer (or the one read at sign-in) stands, and the failure is logged.
package struct MembershipChecker: Sendable {
    package struct Record: Codable {
        package var checkedOrgs: [String]
        package var checkedTeams: [String]
        package var orgs: [String]
        package var teams: [String]
    }

    package let github: GitHubClient
    package let token: String
    package let ttl: Duration
    package let store: any KeyValueStore
    package let logger: Logger

    package init(github: GitHubClient, token: String, ttl: Duration, store: any KeyValueStore, logger: Logger) {
        self.github = github
        self.token = token
        self.ttl = ttl
        self.store = store
        self.logger = logger
    }

    /// The user's memberships among `orgs` and `teams` (lower-cased names the allow-lists use).
    package func identity(login: String, subject: String, orgs: Set<String>, teams: Set<String>, fallback: UserIdentity) async -> UserIdentity {
        let key = "membership:\(subject)"
        if let bytes = try? await store.get(key), let record = try? JSONDecoder().decode(Record.self, from: Data(bytes)),
           orgs.isSubset(of: Set(record.checkedOrgs)), teams.isSubset(of: Set(record.checkedTeams))
        {
            return UserIdentity(login: login, orgs: record.orgs, teams: record.teams)
        }
        do {
            var memberOrgs: [String] = []
            for org in orgs.sorted() where try await github.isMember(org: org, user: login, token: token) {
                memberOrgs.append(org)
            }
            var memberTeams: [String] = []
            for team in teams.sorted() {
                let parts = team.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                if try await github.isTeamMember(org: parts[0], team: parts[1], user: login, token: token) { memberTeams.append(team) }
            }
            let record = Record(checkedOrgs: orgs.sorted(), checkedTeams: teams.sorted(), orgs: memberOrgs, teams: memberTeams)
            if let bytes = try? JSONEncoder().encode(record) {
                try? await store.set(key, Array(bytes), ttl: ttl)
            }
            return UserIdentity(login: login, orgs: memberOrgs, teams: memberTeams)
        } catch {
            logger.warning("GitHub membership check failed; using the last known memberships", metadata: ["login": "\(login)", "detail": "\(error.description)"])
            return fallback
        }
    }
}
