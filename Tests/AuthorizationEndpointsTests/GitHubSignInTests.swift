import AsyncHTTPClient
import AuthorizationEndpoints
import AuthorizationServer
import GatewayAuth
import GatewayConfig
import HTTPTypes
import Logging
import Testing

/// GitHub as an identity provider, on the answers that need no GitHub: where the browser goes, a
/// sign-in the user did not complete, a callback without a code, and a GitHub that cannot be reached.
@Suite struct GitHubSignInTests {
    static let members = AccessPolicy(global: AccessRule(orgs: ["acme"]), router: nil)
    static let anyone = AccessPolicy(global: AccessRule(anyone: true), router: nil)

    func provider(webURL: String = "https://github.example") -> GitHubSignIn {
        let configuration = GitHubConfiguration(clientID: "Iv1.client", clientSecret: "not-a-real-secret", webURL: webURL, apiURL: webURL + "/api/v3")
        return GitHubSignIn(github: GitHubClient(configuration: configuration, http: HTTPClient.shared), logger: Logger(label: "test"))
    }

    @Test func theBrowserGoesToTheConfiguredGitHubAskingForOrgsOnlyWhenAPolicyNeedsThem() {
        let withOrgs = provider().signInURL(state: "s1", callbackURL: "https://gw.example/oauth/github/callback", policy: Self.members)
        #expect(withOrgs.hasPrefix("https://github.example/login/oauth/authorize?"))
        #expect(withOrgs.contains("state=s1"))
        #expect(withOrgs.contains("scope=read%3Aorg"))
        #expect(withOrgs.contains("redirect_uri=https%3A%2F%2Fgw.example%2Foauth%2Fgithub%2Fcallback"))
        let plain = provider().signInURL(state: "s1", callbackURL: "https://gw.example/oauth/github/callback", policy: Self.anyone)
        #expect(!plain.contains("read%3Aorg"))
    }

    @Test func aSignInTheUserCancelledIsNotCompleted() async {
        let outcome = await provider().signedIn(callback: FormFields("error=access_denied&state=s1"), callbackURL: "https://gw.example/cb", policy: Self.anyone)
        #expect(outcome == .notCompleted(detail: "GitHub sign-in was not completed (access_denied)"))
    }

    @Test func aCallbackWithoutACodeIsRefused() async {
        let outcome = await provider().signedIn(callback: FormFields("state=s1"), callbackURL: "https://gw.example/cb", policy: Self.anyone)
        #expect(outcome == .refused(message: "GitHub's answer had no code.", status: .badRequest))
    }

    @Test func aGitHubThatCannotBeReachedIsAProviderFailureNotASignIn() async {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let outcome = await provider(webURL: "http://127.0.0.1:1").signedIn(callback: FormFields("code=abc&state=s1"), callbackURL: "https://gw.example/cb", policy: Self.anyone)
        guard case .providerFailed = outcome else {
            Issue.record("expected a provider failure, got \(outcome)")
            return
        }
    }
}
