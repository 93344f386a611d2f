import Foundation
import GatewayCluster
import GatewayStore
import GatewayAuth
import Logging
import Synchronization
import Testing

@Suite struct HopSignatureTests {
    let signature = HopSignature(secret: String(repeating: "s", count: 40))
    let body = Array(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid"}}"#.utf8)

    @Test func aSignedRequestVerifiesAndAnyChangeDoesNot() {
        let now = Date()
        let signed = signature.sign(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, now: now)
        #expect(signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, time: signed.time, signature: signed.signature, now: now))
        // Every signed part matters.
        #expect(!signature.verify(method: "GET", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp?x", sessionID: "abc", identity: "eyJ9", body: body, time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abd", identity: "eyJ9", body: body, time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: nil, identity: "eyJ9", body: body, time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ8", body: body, time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body + [32], time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, time: String(Int(signed.time)! + 1), signature: signed.signature, now: now))
        // Another cluster's secret, garbage, and an empty signature.
        let other = HopSignature(secret: String(repeating: "t", count: 40))
        #expect(!other.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, time: signed.time, signature: signed.signature, now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, time: signed.time, signature: "bm9wZQ==", now: now))
        #expect(!signature.verify(method: "POST", target: "/kit/mcp", sessionID: "abc", identity: "eyJ9", body: body, time: signed.time, signature: "", now: now))
    }

    @Test func aSignatureIsGoodForThirtySecondsEitherWay() {
        let then = Date(timeIntervalSince1970: 1_800_000_000)
        let signed = signature.sign(method: "POST", target: "/m", sessionID: nil, identity: "i", body: body, now: then)
        func verify(after seconds: Double) -> Bool {
            signature.verify(method: "POST", target: "/m", sessionID: nil, identity: "i", body: body, time: signed.time, signature: signed.signature, now: then.addingTimeInterval(seconds))
        }
        #expect(verify(after: 30) && verify(after: -30))
        #expect(!verify(after: 31) && !verify(after: -31))
        #expect(!signature.verify(method: "POST", target: "/m", sessionID: nil, identity: "i", body: body, time: "soon", signature: signed.signature, now: then))
    }
}

@Suite struct ClusterMembershipTests {
    let logger = Logger(label: "test")

    @Test func instancesAreHereLiveDrainingOrGone() async throws {
        let store = MemoryStore()
        let a = ClusterMembership(store: store, advertiseURL: "http://10.0.0.1:8080", heartbeatTimeout: .seconds(3), instanceID: "a", logger: logger)
        let b = ClusterMembership(store: store, advertiseURL: "http://10.0.0.2:8080", heartbeatTimeout: .seconds(3), instanceID: "b", logger: logger)
        #expect(a.instanceID != b.instanceID)
        let beatA = await a.heartbeat()
        let beatB = await b.heartbeat()
        #expect(beatA && beatB)
        #expect(try await a.placement(of: a.instanceID) == .here)
        #expect(try await a.placement(of: b.instanceID) == .live(url: "http://10.0.0.2:8080"))
        #expect(try await a.placement(of: nil) == .gone)
        #expect(try await a.placement(of: "never-seen") == .gone)
        let peer = await a.servingPeer()
        #expect(peer?.id == b.instanceID && peer?.url == "http://10.0.0.2:8080")

        // b stops: the others see it draining (after their one-second cache), then gone.
        await b.markDraining()
        let c = ClusterMembership(store: store, advertiseURL: "http://10.0.0.3:8080", instanceID: "c", logger: logger)
        #expect(try await c.placement(of: b.instanceID) == .draining(url: "http://10.0.0.2:8080"))
        #expect(await c.servingPeer()?.id == a.instanceID)
        await b.leave()
        let d = ClusterMembership(store: store, advertiseURL: nil, instanceID: "d", logger: logger)
        #expect(try await d.placement(of: b.instanceID) == .gone)
        // What a failed forward learned wins over the cache until it is read again.
        a.learned(b.instanceID, .gone)
        #expect(try await a.placement(of: b.instanceID) == .gone)
    }

    @Test func aHeartbeatLapsesAfterItsTimeout() async throws {
        // The store's clock is the test's: the heartbeat's expiry is moved to, not waited for.
        let clock = TestClock()
        let store = MemoryStore(now: { clock.now })
        let a = ClusterMembership(store: store, advertiseURL: "http://a", heartbeatTimeout: .milliseconds(200), instanceID: "a", logger: logger)
        #expect(await a.heartbeat())
        let observer = ClusterMembership(store: store, advertiseURL: nil, instanceID: "observer", logger: logger)
        #expect(try await observer.placement(of: a.instanceID) == .live(url: "http://a"))
        clock.advance(by: .milliseconds(150))
        #expect(try await ClusterMembership(store: store, advertiseURL: nil, instanceID: "early", logger: logger).placement(of: a.instanceID) == .live(url: "http://a"))
        clock.advance(by: .milliseconds(100))
        #expect(try await ClusterMembership(store: store, advertiseURL: nil, instanceID: "fresh", logger: logger).placement(of: a.instanceID) == .gone)
    }

    @Test func aHeartbeatMissingJustAfterTheStoreWasAwayIsNotTakenForGone() async throws {
        // Redis restarted after an outage longer than the heartbeat timeout: every instance's
        // heartbeat has lapsed in it, the live ones' too. Until they had time to beat again, a
        // missing heartbeat says nothing (taking the sessions over would give them two children).
        let clock = TestClock()
        let store = SwitchableStore(MemoryStore(now: { clock.now }))
        let timeout = Duration.seconds(3)
        let a = ClusterMembership(store: store, advertiseURL: "http://a", heartbeatTimeout: timeout, instanceID: "a", logger: logger, now: { clock.now })
        let b = ClusterMembership(store: store, advertiseURL: "http://b", heartbeatTimeout: timeout, instanceID: "b", logger: logger, now: { clock.now })
        #expect(await a.heartbeat())
        #expect(await b.heartbeat())
        #expect(try await b.placement(of: "a") == .live(url: "http://a"))

        store.isDown = true
        clock.advance(by: .seconds(5))
        #expect(await b.heartbeat() == false)
        await #expect(throws: StoreError.self) { try await b.placement(of: "a") }
        store.isDown = false
        #expect(await b.heartbeat())
        // a's heartbeat lapsed while the store was away, and a has not beaten yet.
        await #expect(throws: StoreError.self) { try await b.placement(of: "a") }
        clock.advance(by: .seconds(1))
        #expect(await a.heartbeat())
        #expect(try await b.placement(of: "a") == .live(url: "http://a"))

        // An instance that really is gone: gone once the store has been back for a heartbeat
        // timeout plus the store client's reconnect wait.
        clock.advance(by: timeout + .seconds(1))
        #expect(try await ClusterMembership(store: store, advertiseURL: nil, instanceID: "c", logger: logger).placement(of: "a") == .gone)
        let late = try await b.placement(of: "a")
        #expect(late == .gone, "b: the store has been back for 5 s; a's heartbeat lapsed after its last beat")
        // An instance that has always reached the store believes a missing heartbeat at once.
        #expect(try await b.placement(of: "never-seen") == .gone)
    }
}

/// A store that can be taken away and brought back.
final class SwitchableStore: KeyValueStore {
    private let base: MemoryStore
    private let down = Atomic<Bool>(false)
    init(_ base: MemoryStore) { self.base = base }
    var isDown: Bool {
        get { down.load(ordering: .relaxed) }
        set { down.store(newValue, ordering: .relaxed) }
    }

    private func check() throws(StoreError) { if isDown { throw .unavailable("down") } }
    func get(_ key: String) async throws(StoreError) -> [UInt8]? { try check(); return try await base.get(key) }
    func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) { try check(); try await base.set(key, value, ttl: ttl) }
    func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool { try check(); return try await base.setIfAbsent(key, value, ttl: ttl) }
    func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool {
        try check(); return try await base.replaceIfEqual(key, expected: expected, with: value)
    }
    func take(_ key: String) async throws(StoreError) -> [UInt8]? { try check(); return try await base.take(key) }
    func delete(_ keys: [String]) async throws(StoreError) -> Int { try check(); return try await base.delete(keys) }
    func increment(_ key: String, window: Duration) async throws(StoreError) -> Int { try check(); return try await base.increment(key, window: window) }
    func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision {
        try check(); return try await base.rateLimit(key, interval: interval, burst: burst)
    }
    func timeToLive(_ key: String) async throws(StoreError) -> Duration? { try check(); return try await base.timeToLive(key) }
    func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError) { try check(); try await base.addToSet(key, members, ttl: ttl) }
    func setMembers(_ key: String) async throws(StoreError) -> [String] { try check(); return try await base.setMembers(key) }
    func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError) { try check(); try await base.removeFromSet(key, members) }
    func ping() async throws(StoreError) { try check() }
}

/// A clock the test moves.
final class TestClock: Sendable {
    private let offset = Mutex<Duration>(.zero)
    private let start = ContinuousClock.now
    var now: ContinuousClock.Instant { start + offset.withLock { $0 } }
    func advance(by duration: Duration) { offset.withLock { $0 += duration } }
}

@Suite struct SessionRecordTests {
    @Test func aReleaseNeverUndoesATakeoverAndOnlyOneTakeoverWins() async throws {
        let store = MemoryStore()
        let a = SessionBindings(store: store, instanceID: "a")
        let owner = SessionOwner(router: "kit", subject: "alice")
        try await a.bind("s1", to: owner, details: SessionDetails(service: "kit", kind: "stdio", initialize: #"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#, protocolVersion: "2025-06-18"))
        let recorded = try #require(try await a.currentRecord("s1"))
        #expect(recorded.instance == "a" && recorded.kind == "stdio" && recorded.service == "kit" && recorded.initialize?.contains("initialize") == true)

        // b and c race to take it over from a: one wins.
        let b = SessionBindings(store: store, instanceID: "b")
        let c = SessionBindings(store: store, instanceID: "c")
        async let byB = b.move("s1", from: ["a", nil], to: "b")
        async let byC = c.move("s1", from: ["a", nil], to: "c")
        let (wonB, wonC) = try await (byB, byC)
        #expect(wonB != wonC)
        let holder = try #require(try await a.currentRecord("s1")?.instance)
        #expect(holder == (wonB ? "b" : "c"))

        // a, stopping, releases what it held: the record names someone else now, so it stays.
        #expect(try await a.move("s1", from: ["a"], to: nil) == false)
        #expect(try await a.currentRecord("s1")?.instance == holder)
        // The holder releases: nobody holds it, and anyone may take it.
        #expect(try await SessionBindings(store: store, instanceID: holder).move("s1", from: [holder], to: nil))
        #expect(try await a.currentRecord("s1")?.instance == nil)
        // Ownership is unchanged by all of it; another caller still gets 404.
        try await a.check("s1", owner: owner)
        await #expect(throws: SessionRefusal.self) { try await b.check("s1", owner: SessionOwner(router: "kit", subject: "mallory")) }
    }

    /// The confirmation cache is by id; ending a session by its hash (the admin page) or by its
    /// id must still stop it at once on this instance, and another owner never gets the cached answer.
    @Test func aCachedConfirmationIsTheOwnersOnlyAndEndsWithTheSession() async throws {
        let store = MemoryStore()
        let bindings = SessionBindings(store: store, instanceID: "a")
        let alice = SessionOwner(router: "kit", subject: "alice")
        try await bindings.bind("s1", to: alice)
        try await bindings.check("s1", owner: alice)
        #expect(bindings.isRecentlyChecked("s1", router: "kit", subject: "alice"))
        #expect(!bindings.isRecentlyChecked("s1", router: "kit", subject: "mallory"))
        #expect(!bindings.isRecentlyChecked("s1", router: "side", subject: "alice"))
        #expect(!bindings.isRecentlyChecked("s1", router: "kit", subject: nil))
        #expect(!bindings.isRecentlyChecked("S1", router: "kit", subject: "alice"))
        await #expect(throws: SessionRefusal.self) { try await bindings.check("s1", owner: SessionOwner(router: "kit", subject: "mallory")) }

        #expect(try await bindings.end(idOrHash: SessionBindings.hash("s1")))
        #expect(!bindings.isRecentlyChecked("s1", router: "kit", subject: "alice"))
        await #expect(throws: SessionRefusal.self) { try await bindings.check("s1", owner: alice) }

        try await bindings.bind("s2", to: alice)
        #expect(bindings.isRecentlyChecked("s2", router: "kit", subject: "alice"))
        #expect(try await bindings.end(idOrHash: "s2"))
        #expect(!bindings.isRecentlyChecked("s2", router: "kit", subject: "alice"))
    }

    /// The fast relay carries an upstream's own session only: a session the gateway bridged (or
    /// a record that names no kind) must not pass the check that asks for `http`.
    @Test func aCachedConfirmationAsksForItsKind() async throws {
        let bindings = SessionBindings(store: MemoryStore(), instanceID: "a")
        let alice = SessionOwner(router: "kit", subject: "alice")
        try await bindings.bind("own", to: alice, details: SessionDetails(service: "up", kind: "http"))
        try await bindings.bind("bridged", to: alice, details: SessionDetails(service: "up", kind: "bridged"))
        try await bindings.bind("plain", to: alice)
        #expect(bindings.isRecentlyChecked("own", router: "kit", subject: "alice", kind: "http"))
        #expect(!bindings.isRecentlyChecked("own", router: "kit", subject: "mallory", kind: "http"))
        #expect(!bindings.isRecentlyChecked("bridged", router: "kit", subject: "alice", kind: "http"))
        #expect(bindings.isRecentlyChecked("bridged", router: "kit", subject: "alice"))
        #expect(!bindings.isRecentlyChecked("plain", router: "kit", subject: "alice", kind: "http"))
    }

    @Test func aRecordWrittenBeforeThePlacementFieldsStillReads() async throws {
        let store = MemoryStore()
        let hash = SessionBindings.hash("old")
        try await store.set("session:\(hash)", Array(#"{"router":"kit","subject":"alice"}"#.utf8), ttl: .seconds(60))
        let bindings = SessionBindings(store: store, instanceID: "a")
        let record = try await bindings.check("old", owner: SessionOwner(router: "kit", subject: "alice"))
        #expect(record.instance == nil && record.kind == nil)
    }
}
