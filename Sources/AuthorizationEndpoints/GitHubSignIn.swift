package import AuthorizationServer
package import GatewayAuth
package import Logging
import HTTPTypes

/// GitHub (or GitHub Enterprise) as an identity provider: the browser signs in at GitHub, comes
/// back with a code, and the gateway reads the user (and, when an allow-list needs them, their
/// organisations and teams) with GitHub's token, which is used for this sign-in only.
package struct GitHubSignIn: RedirectingIdentityProvider {
    package let github: GitHubClient
    package let logger: Logger
    package var name: String { "github" }
    package var displayName: String { "GitHub" }

    package init(github: GitHubClient, logger: Logger) {
        self.github = github
        self.logger = logger
    }

    package func signInURL(state: String, callbackURL: String, policy: AccessPolicy) -> String {
        github.authorizeURL(state: state, callbackURL: callbackURL, needsOrgs: policy.needsMembership)
    }

    package func signedIn(callback: FormFields, callbackURL: String, policy: AccessPolicy) async -> SignInOutcome {
        if let error = callback["error"] {
            logger.info("GitHub sign-in not completed", metadata: ["error": "\(error)"])
            return .notCompleted(detail: "GitHub sign-in was not completed (\(error))")
        }
        guard let code = callback["code"] else {
            return .refused(message: "GitHub's answer had no code.", status: .badRequest)
        }
        do {
            let token = try await github.exchange(code: code, callbackURL: callbackURL)
            let user = try await github.user(token: token)
            let orgs = policy.needsOrgs ? try await github.orgs(token: token) : nil
            let teams = policy.needsTeams ? try await github.teams(token: token) : nil
            return .signedIn(GrantSubject(subject: "github:\(user.id)", login: user.login, orgs: orgs, teams: teams, email: user.email))
        } catch {
            logger.warning("GitHub sign-in failed", metadata: ["detail": "\(error.description)"])
            return .providerFailed(detail: error.description)
        }
    }
}
