package import AuthorizationServer
package import GatewayAuth
package import Logging
import HTTPTypes

/// GitHub (or GitHub Enterprise) as an identity provider: the browser signs in at GitHub, comes
/// back with a code, and the gateway reads the user (and, when an allow-list needs them, their
/// organisations and teams) with GitHub's token. The token is used for this sign-in only, unless
/// services call GitHub with it (`oauth.provider: github`): then their scopes are asked for too
/// and the token is handed to `keepToken`, which stores it sealed for those services.
package struct GitHubSignIn: RedirectingIdentityProvider {
    package let github: GitHubClient
    package let logger: Logger
    /// The scopes services with `provider: github` need (read at each sign-in: they reload).
    package var extraScopes: @Sendable () -> [String] = { [] }
    /// Keeps the user's token for those services.
    package var keepToken: (@Sendable (_ user: GrantSubject, _ token: String) async -> Void)?
    package var name: String { "github" }
    package var displayName: String { "GitHub" }

    package init(github: GitHubClient, logger: Logger) {
        self.github = github
        self.logger = logger
    }

    package func signInURL(state: String, callbackURL: String, policy: AccessPolicy) -> String {
        github.authorizeURL(state: state, callbackURL: callbackURL, needsOrgs: policy.needsMembership, extraScopes: extraScopes())
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
            let subject = GrantSubject(subject: "github:\(user.id)", login: user.login, orgs: orgs, teams: teams, email: user.email)
            // Kept only for someone the allow-lists admit: the refused user's token is not
            // stored anywhere (the caller refuses the sign-in on the same policy).
            if policy.admits(subject.identity) { await keepToken?(subject, token) }
            return .signedIn(subject)
        } catch {
            logger.warning("GitHub sign-in failed", metadata: ["detail": "\(error.description)"])
            return .providerFailed(detail: error.description)
        }
    }
}
