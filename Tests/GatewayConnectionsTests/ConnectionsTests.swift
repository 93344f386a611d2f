import Foundation
import GatewayConfig
import GatewayConnections
import GatewayStore
import Synchronization
import Testing

@Suite struct SecretSealerTests {
    let old = StoreKeys(current: Array(repeating: 1, count: 32))
    let new = StoreKeys(current: Array(repeating: 2, count: 32), previous: [Array(repeating: 1, count: 32)])

    @Test func aSealedValueOpensOnlyWithItsKeyAndWhereItWasStored() throws {
        let sealer = SecretSealer(keys: old)
        let secret = Array("gho_the-users-token".utf8)
        let sealed = try sealer.seal(secret, context: "upstream-grant|linear|abc")
        #expect(sealed.hasPrefix("v1.\(sealer.currentKeyID).") && !sealed.contains("gho_"))
        #expect(try sealer.open(sealed, context: "upstream-grant|linear|abc") == secret)
        // Two seals of the same value differ (a fresh nonce each time).
        #expect(try sealer.seal(secret, context: "upstream-grant|linear|abc") != sealed)
        // Moved under another user's or service's key: it does not open.
        #expect(throws: SecretSealer.Failure.self) { try sealer.open(sealed, context: "upstream-grant|linear|def") }
        #expect(throws: SecretSealer.Failure.self) { try sealer.open(sealed, context: "upstream-grant|github|abc") }
        // Altered: one character of the ciphertext changed.
        var altered = Array(sealed)
        altered[altered.count - 5] = altered[altered.count - 5] == "A" ? "B" : "A"
        #expect(throws: SecretSealer.Failure.self) { try sealer.open(String(altered), context: "upstream-grant|linear|abc") }
        // Another key entirely: refused, naming the key id (never the key).
        let stranger = SecretSealer(keys: StoreKeys(current: Array(repeating: 9, count: 32)))
        do {
            _ = try stranger.open(sealed, context: "upstream-grant|linear|abc")
            Issue.record("opened with another key")
        } catch {
            #expect(error.description.contains(sealer.currentKeyID))
        }
        #expect(throws: SecretSealer.Failure.self) { try sealer.open("plain-token", context: "x") }
    }

    @Test func noKeyReachesADescription() {
        let secretKey = Array(repeating: UInt8(173), count: 32)
        let sealer = SecretSealer(keys: StoreKeys(current: secretKey, previous: [secretKey]))
        for printed in [String(describing: sealer), String(reflecting: sealer), String(describing: sealer.keys), String(reflecting: sealer.keys)] {
            #expect(!printed.contains("173"), "\(printed)")
        }
    }

    @Test func aRotatedKeyStillOpensWhatTheOldOneSealed() throws {
        let sealed = try SecretSealer(keys: old).seal(Array("t".utf8), context: "c")
        let rotated = SecretSealer(keys: new)
        #expect(try rotated.open(sealed, context: "c") == Array("t".utf8))
        #expect(SecretSealer.keyID(of: try rotated.seal(Array("t".utf8), context: "c")) == rotated.currentKeyID)
        #expect(rotated.currentKeyID != SecretSealer(keys: old).currentKeyID)
        #expect(!"\(new)".contains("2, 2"))
    }
}

@Suite struct ConnectionVaultTests {
    static func grant(_ token: String, refresh: String? = "r1", expiresIn: TimeInterval? = 3600) -> UpstreamGrant {
        var grant = UpstreamGrant(accessToken: token, refreshToken: refresh, expiresAt: expiresIn.map { Date().addingTimeInterval($0) })
        grant.tokenEndpoint = "https://as.example/token"
        grant.clientID = "client"
        return grant
    }

    @Test func connectionsAreKeptPerUserAndServiceSealedAndCounted() async throws {
        let store = MemoryStore()
        let keys = Mutex(StoreKeys(current: Array(repeating: 1, count: 32)))
        let vault = ConnectionVault(store: store, keys: { keys.withLock { $0 } })
        try await vault.save(Self.grant("alice-token"), subject: "local:alice", service: "linear")
        try await vault.save(Self.grant("bob-token"), subject: "local:bob", service: "linear")
        try await vault.save(Self.grant("alice-gh"), subject: "local:alice", service: "github")
        #expect(try await vault.grant(subject: "local:alice", service: "linear")?.accessToken == "alice-token")
        #expect(try await vault.grant(subject: "local:bob", service: "linear")?.accessToken == "bob-token")
        #expect(try await vault.grant(subject: "local:carol", service: "linear") == nil)
        #expect(try await vault.connectedCounts() == ["linear": 2, "github": 1])
        // What the store holds names neither the user nor the token.
        let key = "upstream-grant:linear:\(ConnectionVault.subjectHash("local:alice"))"
        let raw = String(decoding: try #require(try await store.get(key)), as: UTF8.self)
        #expect(raw.hasPrefix("v1.") && !raw.contains("alice"))
        // Bob's record copied over Alice's does not open as hers.
        let bobKey = "upstream-grant:linear:\(ConnectionVault.subjectHash("local:bob"))"
        try await store.set(key, try #require(try await store.get(bobKey)), ttl: nil)
        await #expect(throws: ConnectionVault.Failure.self) { try await vault.grant(subject: "local:alice", service: "linear") }

        // Rotation: a new key, the old one kept for opening; reseal moves every record to the new.
        try await vault.save(Self.grant("alice-token"), subject: "local:alice", service: "linear")
        keys.withLock { $0 = StoreKeys(current: Array(repeating: 2, count: 32), previous: [Array(repeating: 1, count: 32)]) }
        let result = try await vault.reseal()
        #expect(result.resealed == 3 && result.unchanged == 0 && result.failed.isEmpty)
        #expect(try await vault.reseal().unchanged == 3)
        keys.withLock { $0 = StoreKeys(current: Array(repeating: 2, count: 32)) }
        #expect(try await vault.grant(subject: "local:alice", service: "linear")?.accessToken == "alice-token")

        #expect(try await vault.remove(subject: "local:alice", service: "linear")?.accessToken == "alice-token")
        #expect(try await vault.grant(subject: "local:alice", service: "linear") == nil)
        #expect(try await vault.connectedCounts() == ["linear": 1, "github": 1])
    }

    @Test func theRequestPathReusesARecentReadAndSeesItsOwnChangesAtOnce() async throws {
        let store = MemoryStore()
        let keys: @Sendable () -> StoreKeys? = { StoreKeys(current: Array(repeating: 1, count: 32)) }
        let (here, there) = (ConnectionVault(store: store, keys: keys), ConnectionVault(store: store, keys: keys))
        try await here.save(Self.grant("t1"), subject: "s", service: "linear")
        #expect(try await there.grant(subject: "s", service: "linear", maxAge: .seconds(5))?.accessToken == "t1")
        // Changed on another instance: a recent read stands for up to maxAge; a plain read sees it.
        try await here.save(Self.grant("t2"), subject: "s", service: "linear")
        #expect(try await there.grant(subject: "s", service: "linear", maxAge: .seconds(5))?.accessToken == "t1")
        #expect(try await there.grant(subject: "s", service: "linear")?.accessToken == "t2")
        // Changed here: at once, even through the recent reads.
        try await here.remove(subject: "s", service: "linear")
        #expect(try await here.grant(subject: "s", service: "linear", maxAge: .seconds(5)) == nil)
        // Nothing is remembered of a user without a connection: their connecting shows at once.
        try await there.save(Self.grant("t3"), subject: "s", service: "linear")
        #expect(try await here.grant(subject: "s", service: "linear", maxAge: .seconds(5))?.accessToken == "t3")
    }

    @Test func withoutAKeyNothingIsStored() async {
        let vault = ConnectionVault(store: MemoryStore(), keys: { nil })
        await #expect(throws: ConnectionVault.Failure.self) { try await vault.save(Self.grant("t"), subject: "s", service: "linear") }
    }

    @Test func concurrentRefreshesMakeOneAndARefusedOneDisconnects() async throws {
        let vault = ConnectionVault(store: MemoryStore(), keys: { StoreKeys(current: Array(repeating: 1, count: 32)) })
        try await vault.save(Self.grant("old"), subject: "s", service: "linear")
        let calls = Counter()
        let gate = Gate()
        let asked = Counter()
        let tokens = await withTaskGroup(of: String?.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    if asked.value.wrappingAdd(1, ordering: .relaxed).newValue == 20 { gate.open() }
                    return await vault.refreshed(subject: "s", service: "linear", stale: "old") { current in
                        calls.value.wrappingAdd(1, ordering: .relaxed)
                        // Held until every caller has asked: they join this refresh or, coming
                        // later, find its record.
                        await gate.wait()
                        var next = current
                        next.accessToken = "new"
                        return .refreshed(next)
                    }?.accessToken
                }
            }
            var all: [String?] = []
            for await token in group { all.append(token) }
            return all
        }
        #expect(calls.value.load(ordering: .relaxed) == 1)
        #expect(tokens.allSatisfy { $0 == "new" })
        // Someone already refreshed: the record's newer token is the answer, no second refresh.
        let again = await vault.refreshed(subject: "s", service: "linear", stale: "old") { _ in
            Issue.record("refreshed twice")
            return .refused
        }
        #expect(again?.accessToken == "new")
        // Not reachable now: the grant stays.
        #expect(await vault.refreshed(subject: "s", service: "linear", stale: "new") { _ in .unavailable }?.accessToken == "new")
        // Refused (invalid_grant): the connection is gone.
        #expect(await vault.refreshed(subject: "s", service: "linear", stale: "new") { _ in .refused } == nil)
        #expect(try await vault.grant(subject: "s", service: "linear") == nil)
    }

    @Test func twoInstancesOnOneStoreRefreshOnce() async throws {
        let lockRefused = Gate()
        let store = LockWatchingStore(MemoryStore()) { lockRefused.open() }
        let keys: @Sendable () -> StoreKeys? = { StoreKeys(current: Array(repeating: 1, count: 32)) }
        let (first, second) = (ConnectionVault(store: store, keys: keys), ConnectionVault(store: store, keys: keys))
        try await first.save(Self.grant("old"), subject: "s", service: "linear")
        let calls = Counter()
        let (entered, enteredSignal) = AsyncStream<Void>.makeStream()
        let gate = Gate()
        let refresh: @Sendable (UpstreamGrant) async -> ConnectionVault.RefreshOutcome = { current in
            calls.value.wrappingAdd(1, ordering: .relaxed)
            enteredSignal.yield()
            // The authorization server answers once the other instance has found the lock taken.
            await gate.wait()
            var next = current
            next.accessToken = "new"
            return .refreshed(next)
        }
        async let fromFirst = first.refreshed(subject: "s", service: "linear", stale: "old", refresh: refresh)
        // The first instance holds the lock and is refreshing.
        var signals = entered.makeAsyncIterator()
        _ = await signals.next()
        async let fromSecond = second.refreshed(subject: "s", service: "linear", stale: "old", refresh: refresh)
        await lockRefused.wait()
        gate.open()
        let (a, b) = await (fromFirst, fromSecond)
        // The second instance found the first's lock and used the record it wrote.
        #expect(a?.accessToken == "new" && b?.accessToken == "new")
        #expect(calls.value.load(ordering: .relaxed) == 1)
    }

    @Test func aTokenIsRefreshedWithinAQuarterOfItsLifeOrAMinuteOfExpiring() {
        let now = Date()
        var hour = UpstreamGrant(accessToken: "t", refreshToken: "r", expiresAt: now.addingTimeInterval(3600), connectedAt: now)
        #expect(!hour.wantsRefresh(now: now))
        #expect(!hour.wantsRefresh(now: now.addingTimeInterval(3539)))
        #expect(hour.wantsRefresh(now: now.addingTimeInterval(3541)))
        hour.refreshToken = nil
        #expect(!hour.wantsRefresh(now: now.addingTimeInterval(3599)))
        let short = UpstreamGrant(accessToken: "t", refreshToken: "r", expiresAt: now.addingTimeInterval(8), connectedAt: now)
        #expect(!short.wantsRefresh(now: now.addingTimeInterval(5.9)) && short.wantsRefresh(now: now.addingTimeInterval(6.1)))
        #expect(!UpstreamGrant(accessToken: "t", refreshToken: "r").wantsRefresh(now: now))
    }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// Closed until `open`; every `wait` returns once it is open.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiting = state.withLock { state in
            state.open = true
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state in
                if state.open { return true }
                state.waiting.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}

/// A store that says when a lock (`setIfAbsent`) was found taken.
struct LockWatchingStore: KeyValueStore {
    let base: MemoryStore
    let refused: @Sendable () -> Void

    init(_ base: MemoryStore, refused: @escaping @Sendable () -> Void) {
        self.base = base
        self.refused = refused
    }

    func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool {
        let set = try await base.setIfAbsent(key, value, ttl: ttl)
        if !set { refused() }
        return set
    }

    func get(_ key: String) async throws(StoreError) -> [UInt8]? { try await base.get(key) }
    func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) { try await base.set(key, value, ttl: ttl) }
    func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool { try await base.replaceIfEqual(key, expected: expected, with: value) }
    func take(_ key: String) async throws(StoreError) -> [UInt8]? { try await base.take(key) }
    func delete(_ keys: [String]) async throws(StoreError) -> Int { try await base.delete(keys) }
    func increment(_ key: String, window: Duration) async throws(StoreError) -> Int { try await base.increment(key, window: window) }
    func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision { try await base.rateLimit(key, interval: interval, burst: burst) }
    func timeToLive(_ key: String) async throws(StoreError) -> Duration? { try await base.timeToLive(key) }
    func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError) { try await base.addToSet(key, members, ttl: ttl) }
    func setMembers(_ key: String) async throws(StoreError) -> [String] { try await base.setMembers(key) }
    func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError) { try await base.removeFromSet(key, members) }
    func ping() async throws(StoreError) { try await base.ping() }
}

@Suite struct UpstreamOAuthClientTests {
    @Test func theResourceMetadataURLIsReadFromAChallenge() {
        #expect(UpstreamOAuthClient.parameter("resource_metadata", in: #"Bearer error="invalid_token", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp""#)
            == "https://mcp.example/.well-known/oauth-protected-resource/mcp")
        #expect(UpstreamOAuthClient.parameter("resource_metadata", in: "Bearer resource_metadata=https://x.example/m, scope=read") == "https://x.example/m")
        #expect(UpstreamOAuthClient.parameter("resource_metadata", in: #"Bearer realm="x""#) == nil)
    }

    @Test func tokenAnswersBecomeGrants() throws {
        let first = try UpstreamOAuthClient.grant(from: ["access_token": "a1", "refresh_token": "r1", "expires_in": 60, "token_type": "Bearer", "scope": "read"], previous: nil)
        #expect(first.accessToken == "a1" && first.refreshToken == "r1" && first.scope == "read")
        #expect(abs((first.expiresAt?.timeIntervalSinceNow ?? 0) - 60) < 5)
        // A refresh answer without a refresh token keeps the old one (RFC 6749 §6).
        let refreshed = try UpstreamOAuthClient.grant(from: ["access_token": "a2", "token_type": "bearer"], previous: first)
        #expect(refreshed.accessToken == "a2" && refreshed.refreshToken == "r1" && refreshed.expiresAt == nil)
        #expect(throws: UpstreamOAuthClient.Failure.self) { try UpstreamOAuthClient.grant(from: ["token_type": "Bearer"], previous: nil) }
        #expect(throws: UpstreamOAuthClient.Failure.self) { try UpstreamOAuthClient.grant(from: ["access_token": "a", "token_type": "DPoP"], previous: nil) }
    }
}
