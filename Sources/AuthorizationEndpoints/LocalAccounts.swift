import AuthorizationServer
import Foundation
import GatewayAuth
package import GatewayConfig
package import GatewayStore
import HTTPTypes
package import Logging
import NIOPosix

/// Local accounts (`auth.local.users`) as an identity provider: a user name and password checked
/// against its scrypt hash, throttled per account (failures), per client address and for the
/// whole gateway, with an unknown user costing the same work as a wrong password. No HTTP: the
/// consent page shows what `signIn` answers.
package struct LocalAccounts: CredentialIdentityProvider {
    package typealias Outcome = SignInOutcome
    package var name: String { "local" }
    package var displayName: String { "Gateway account" }

    /// Password checks running at once, whoever asks: scrypt is CPU-bound, and unauthenticated
    /// callers must not be able to occupy more than the cores.
    package static let hashing = HashingSlots(limit: max(1, ProcessInfo.processInfo.activeProcessorCount))
    /// Hashed once (touch it at start-up): a real scrypt hash that no password in gateway.yaml matches.
    package static let decoyHash: String = (try? PasswordHash.hash(ClientRegistry.randomToken(bytes: 16))) ?? ""

    package let users: [String: String]
    package let limits: LocalSignInLimits
    package let store: any KeyValueStore
    package let logger: Logger
    /// The slots password checks take (the process-wide ones unless a test brings its own).
    package let hashing: HashingSlots

    package init(users: [String: String], limits: LocalSignInLimits, store: any KeyValueStore, logger: Logger, hashing: HashingSlots = LocalAccounts.hashing) {
        self.users = users
        self.limits = limits
        self.store = store
        self.logger = logger
        self.hashing = hashing
    }

    package var isEnabled: Bool { !users.isEmpty }

    /// Checks `password` for `username`, signing in from `clientIP` for OAuth client `clientID`.
    package func signIn(username: String, password: String, clientIP: String?, clientID: String) async -> Outcome {
        // Per account (failures only, 15 minutes), per address (IPv6: per /64) and for the whole
        // gateway: guessing is throttled wherever it comes from, and one address behind a shared
        // proxy cannot lock everybody out (the client address honours trustedProxies).
        let accountKey = "ratelimit:login-account:\(ClientRegistry.hash(username.lowercased()))"
        do {
            if let failures = try await store.getString(accountKey).flatMap(Int.init), failures >= limits.perAccount {
                return .refused(message: "Too many failed sign-ins for this account; wait 15 minutes and try again.", status: .tooManyRequests)
            }
            let attempts = try await store.increment("ratelimit:login:\(ClientAddress.limitKey(clientIP))", window: .seconds(60))
            if attempts > limits.perAddress {
                return .refused(message: "Too many sign-in attempts from your address; wait a minute and try again.", status: .tooManyRequests)
            }
            if try await store.increment("ratelimit:login-all", window: .seconds(60)) > limits.global {
                return .refused(message: "The gateway is busy checking sign-ins; wait a minute and try again.", status: .tooManyRequests)
            }
        } catch {
            return .storeUnavailable
        }
        guard hashing.acquire() else {
            return .refused(message: "The gateway is busy checking sign-ins; try again in a moment.", status: .tooManyRequests)
        }
        // An unknown user costs the same scrypt work as a wrong password, so timing tells nothing.
        let stored = users[username]
        let hash = stored ?? Self.decoyHash
        let matches = (try? await NIOThreadPool.singleton.runIfActive { PasswordHash.verify(password, against: hash) }) ?? false
        hashing.release()
        guard stored != nil, matches else {
            logger.notice("local sign-in failed", metadata: ["user": "\(username)", "client": "\(clientID)"])
            _ = try? await store.increment(accountKey, window: .seconds(900))
            return .refused(message: "The user name or password is wrong.", status: .unauthorized)
        }
        return .signedIn(GrantSubject(subject: "local:\(username)", login: username))
    }
}
