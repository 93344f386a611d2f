import AuthorizationServer
import GatewayAuth
import GatewayConfig
import GatewayStore
import HTTPTypes
import Synchronization
import Testing

/// The token check in front of protected routes (`ResourceGate`): a token that many requests bring
/// at once, when it is not remembered, is verified once for all of them.
@Suite struct TokenCheckTests {
    struct Route: ProtectedRoute {
        let router: RouterConfiguration
        let resourceURL = "https://gw.example/time/mcp"
        let accessPolicy = AccessPolicy(global: AccessRule(anyone: true), router: nil)
    }

    static func route() throws -> Route {
        let yaml = """
        entryPoints: { web: { address: "127.0.0.1:8080" } }
        publicURL: "https://gw.example"
        routers:
          time: { rule: "PathPrefix(`/time`)", service: s }
        services:
          s: { http: { url: "http://127.0.0.1:1/mcp" } }
        """
        return Route(router: try ConfigurationLoader(environment: [:]).load(yaml: yaml).routers[0])
    }

    @Test(.timeLimit(.minutes(1))) func concurrentChecksOfOneTokenShareItsVerification() async throws {
        let store = RevocationGatedStore(MemoryStore())
        let keys = KeyManager(store: store, settings: .init(algorithm: .es256, rotationInterval: 86400, maxTokenLifetime: 3610))
        let tokens = AccessTokens(issuer: "https://gw.example", lifetime: .seconds(3600), keys: keys, store: store)
        let grant = Grant(clientID: "c1", user: GrantSubject(subject: "github:1", login: "octocat"), scope: "mcp", resource: "https://gw.example/time/mcp")
        let token = try await tokens.issue(for: grant)
        let gate = ResourceGate(accessTokens: tokens, publicURL: PublicURL(scheme: "https", host: "gw.example", port: nil), store: store)
        let route = try Self.route()
        var fields = HTTPFields()
        fields[.authorization] = "Bearer \(token)"
        let checks = 32
        let admitted = Task { [fields] in
            await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<checks {
                    group.addTask {
                        if case .success(let caller) = await gate.check(fields, route: route) { return caller.claims.login == "octocat" }
                        return false
                    }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
        }
        // The first check's revocation lookup is held until every check waits for that one
        // verification; a check verifying on its own would never be counted there.
        for await _ in store.revocationLookups { break }
        while gate.checksWaitingForVerification < checks {
            try Task.checkCancellation()  // the time limit ends a wait that cannot end
            await Task.yield()
        }
        store.open()
        #expect(await admitted.value == checks)
        #expect(store.revocationLookupCount == 1)
        #expect(gate.checksWaitingForVerification == 0)
        // Remembered: the next check asks the store nothing.
        #expect(gate.admittedFromCache(fields, route: route) != nil)
        guard case .success = await gate.check(fields, route: route) else { Issue.record("the remembered token was refused"); return }
        #expect(store.revocationLookupCount == 1)
    }

    @Test func aRevokedTokenIsRefusedToEveryCheckThatSharedItsVerification() async throws {
        let store = MemoryStore()
        let keys = KeyManager(store: store, settings: .init(algorithm: .es256, rotationInterval: 86400, maxTokenLifetime: 3610))
        let tokens = AccessTokens(issuer: "https://gw.example", lifetime: .seconds(3600), keys: keys, store: store)
        let grant = Grant(clientID: "c1", user: GrantSubject(subject: "github:1", login: "octocat"), scope: "mcp", resource: "https://gw.example/time/mcp")
        let token = try await tokens.issue(for: grant)
        try await tokens.revoke(try await tokens.validate(token, audience: nil))
        let gate = ResourceGate(accessTokens: tokens, publicURL: PublicURL(scheme: "https", host: "gw.example", port: nil), store: store)
        let route = try Self.route()
        var fields = HTTPFields()
        fields[.authorization] = "Bearer \(token)"
        let refused = await withTaskGroup(of: Bool.self) { [fields] group in
            for _ in 0..<8 {
                group.addTask {
                    if case .failure(.invalidToken) = await gate.check(fields, route: route) { return true }
                    return false
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(refused == 8)
        #expect(gate.admittedFromCache(fields, route: route) == nil)
    }
}

/// A store whose access-token revocation lookups (`revoked-jti:`) are counted, announced and held
/// until `open()`.
final class RevocationGatedStore: KeyValueStore {
    let base: MemoryStore
    let revocationLookups: AsyncStream<Void>
    private let announce: AsyncStream<Void>.Continuation
    private let state = Mutex<(count: Int, isOpen: Bool, held: [CheckedContinuation<Void, Never>])>((0, false, []))

    init(_ base: MemoryStore) {
        self.base = base
        (revocationLookups, announce) = AsyncStream.makeStream()
    }

    var revocationLookupCount: Int { state.withLock { $0.count } }

    func open() {
        let held = state.withLock { state in
            state.isOpen = true
            defer { state.held = [] }
            return state.held
        }
        for continuation in held { continuation.resume() }
    }

    func get(_ key: String) async throws(StoreError) -> [UInt8]? {
        if key.hasPrefix("revoked-jti:") {
            state.withLock { $0.count += 1 }
            announce.yield()
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if state.isOpen { return true }
                    state.held.append(continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
        return try await base.get(key)
    }

    func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) { try await base.set(key, value, ttl: ttl) }
    func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool { try await base.setIfAbsent(key, value, ttl: ttl) }
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
