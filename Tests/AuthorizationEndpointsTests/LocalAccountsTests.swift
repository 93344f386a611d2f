import AuthorizationEndpoints
import AuthorizationServer
import GatewayConfig
import GatewayStore
import HTTPTypes
import Logging
import Testing

/// Local sign-in without HTTP: password check, and throttling per account, address and overall.
@Suite struct LocalAccountsTests {
    static let hash = (try? PasswordHash.hash("correct horse")) ?? ""

    func accounts(perAddress: Int = 10, perAccount: Int = 3, global: Int = 100, store: any KeyValueStore = MemoryStore()) -> LocalAccounts {
        LocalAccounts(
            users: ["alice": Self.hash], limits: LocalSignInLimits(perAddress: perAddress, perAccount: perAccount, global: global),
            // Its own slots: the process-wide ones (one per core) are shared by tests running in parallel.
            store: store, logger: Logger(label: "test"), hashing: HashingSlots(limit: 8)
        )
    }

    @Test func theRightPasswordSignsInAndNothingElseDoes() async {
        let accounts = accounts()
        #expect(await accounts.signIn(username: "alice", password: "correct horse", clientIP: "192.0.2.1", clientID: "c") == .signedIn(GrantSubject(subject: "local:alice", login: "alice")))
        #expect(await accounts.signIn(username: "alice", password: "wrong", clientIP: "192.0.2.1", clientID: "c") == .refused(message: "The user name or password is wrong.", status: .unauthorized))
        // An unknown user is refused with the same words (and the same scrypt work).
        #expect(await accounts.signIn(username: "mallory", password: "correct horse", clientIP: "192.0.2.1", clientID: "c") == .refused(message: "The user name or password is wrong.", status: .unauthorized))
    }

    @Test func anAccountPausesAfterItsFailuresWhateverTheAddress() async {
        let accounts = accounts(perAccount: 2)
        for address in ["192.0.2.1", "192.0.2.2"] {
            _ = await accounts.signIn(username: "alice", password: "guess", clientIP: address, clientID: "c")
        }
        // Even the right password waits now, from a third address; the account's case does not matter.
        guard case .refused(_, let status) = await accounts.signIn(username: "ALICE", password: "correct horse", clientIP: "192.0.2.3", clientID: "c") else {
            Issue.record("expected a refusal")
            return
        }
        #expect(status == .tooManyRequests)
    }

    @Test func oneAddressIsThrottledPerMinuteAndIPv6Per64() async {
        let accounts = accounts(perAddress: 2, perAccount: 100)
        for suffix in ["1", "2"] {
            _ = await accounts.signIn(username: "bob", password: "guess", clientIP: "2001:db8::\(suffix)", clientID: "c")
        }
        // Another address in the same /64 counts as the same client.
        guard case .refused(_, let status) = await accounts.signIn(username: "alice", password: "correct horse", clientIP: "2001:db8::ffff", clientID: "c") else {
            Issue.record("expected a refusal")
            return
        }
        #expect(status == .tooManyRequests)
        // Another /64 is not affected.
        guard case .signedIn = await accounts.signIn(username: "alice", password: "correct horse", clientIP: "2001:db8:0:1::1", clientID: "c") else {
            Issue.record("another /64 must not be throttled")
            return
        }
    }
}
