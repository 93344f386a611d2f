package import AuthorizationServer
package import HTTPTypes

/// A way for a user to show who they are during `/authorize`: the consent page offers each
/// configured provider, and the one chosen yields the `GrantSubject` the allow-lists are checked
/// on. Two shapes exist, because the browser's path differs: a provider the browser is sent to and
/// comes back from (GitHub), and one that checks what was typed into the consent page (local
/// accounts).
package protocol IdentityProvider: Sendable {
    /// The consent form's `provider` value; redirecting providers are called back at
    /// `/oauth/<name>/callback`.
    var name: String { get }
    /// How pages name it ("GitHub").
    var displayName: String { get }
}

/// A provider the browser leaves the gateway for, and returns from with a code (OAuth 2.0).
package protocol RedirectingIdentityProvider: IdentityProvider {
    /// Where to send the browser. `state` names the sign-in on the way back; `policy` says whether
    /// memberships will be needed (so the provider can ask for the permission to read them).
    func signInURL(state: String, callbackURL: String, policy: AccessPolicy) -> String
    /// The browser came back with `callback` (the query of `/oauth/<name>/callback`).
    func signedIn(callback: FormFields, callbackURL: String, policy: AccessPolicy) async -> SignInOutcome
}

/// A provider that checks credentials typed into the consent page.
package protocol CredentialIdentityProvider: IdentityProvider {
    /// `clientIP` and `clientID` are for throttling and the log, never for the decision itself.
    func signIn(username: String, password: String, clientIP: String?, clientID: String) async -> SignInOutcome
}

/// How a sign-in attempt ended.
package enum SignInOutcome: Sendable, Equatable {
    case signedIn(GrantSubject)
    /// The credentials were refused: shown on the sign-in form, with this status.
    case refused(message: String, status: HTTPResponse.Status)
    /// The user did not complete the sign-in at the provider (the client hears `access_denied`).
    case notCompleted(detail: String)
    /// The provider could not be asked (the client hears `temporarily_unavailable`).
    case providerFailed(detail: String)
    case storeUnavailable
}
