import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayConfig
import GatewayMiddlewares
import GatewayStore
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
package import MCPTransport
import NIOCore
import Synchronization
import Testing

/// The rate-limit middleware on the memory store, and on a store that cannot answer.
@Suite struct RateLimiterTests {
    static func caller(_ subject: String, client: String = "c1") throws -> VerifiedCaller {
        let json = #"{"iss":"i","sub":"\#(subject)","aud":"a","exp":0,"iat":0,"jti":"j","client_id":"\#(client)","scope":"mcp","login":"\#(subject)"}"#
        return VerifiedCaller(claims: try JSONDecoder().decode(AccessTokenClaims.self, from: Data(json.utf8)))
    }

    static func request(_ caller: VerifiedCaller?, tool: String? = nil, ip: String = "192.0.2.7") -> MiddlewareRequest {
        let body = tool.map { #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\#($0)"}}"# } ?? #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        let call = MCPCall(protocolVersion: "2025-11-25", sessionID: nil, body: ByteBuffer(string: body))
        return MiddlewareRequest(router: "r", caller: caller, call: call, clientIP: ip, logger: Logger(label: "test"))
    }

    static func limiter(_ configuration: RateLimitConfiguration, store: any KeyValueStore = MemoryStore()) -> RateLimiter {
        RateLimiter(name: "limit", configuration: configuration, store: store)
    }

    /// Admits `request` `count` times; the refusals, in order.
    static func refusals(_ limiter: RateLimiter, _ request: MiddlewareRequest, count: Int) async -> [GatewayError?] {
        var outcomes: [GatewayError?] = []
        for _ in 0..<count {
            do { try await limiter.admit(request); outcomes.append(nil) } catch { outcomes.append(error) }
        }
        return outcomes
    }

    @Test func eachUserHasTheirOwnAllowanceAndTheRefusalSaysWhenToRetry() async throws {
        let limiter = Self.limiter(RateLimitConfiguration(limit: .init(average: 2, period: .seconds(60))))
        let alice = try Self.caller("local:alice"), bob = try Self.caller("local:bob")
        let outcomes = await Self.refusals(limiter, Self.request(alice), count: 3)
        #expect(outcomes.prefix(2).allSatisfy { $0 == nil })
        guard case .rateLimited(let refusal)? = outcomes[2] else {
            Issue.record("the third request was not refused: \(String(describing: outcomes[2]))")
            return
        }
        #expect(refusal.retryAfterSeconds == 30)
        #expect(refusal.policyField == #""limit";q=2;w=60"#)
        #expect(refusal.stateField == #""limit";r=0;t=30"#)
        let response = GatewayError.rateLimited(refusal).response(form: .jsonRPC(rawID: "1"))
        #expect(response.status == .tooManyRequests)
        #expect(response.headers[.retryAfter] == "30")
        #expect((await Self.refusals(limiter, Self.request(bob), count: 1)).first! == nil)
    }

    @Test func aToolsLimitReplacesTheMiddlewaresForThatTool() async throws {
        let limiter = Self.limiter(RateLimitConfiguration(limit: .init(average: 5, period: .seconds(60)), tools: [("delete_*", .init(average: 1, period: .seconds(60)))]))
        let alice = try Self.caller("local:alice")
        let deletes = await Self.refusals(limiter, Self.request(alice, tool: "delete_file"), count: 2)
        #expect(deletes[0] == nil)
        guard case .rateLimited(let refusal)? = deletes[1] else {
            Issue.record("the second delete was not refused")
            return
        }
        #expect(refusal.policy == "limit;tool=delete_*")
        // The router's own allowance is untouched by the tool's.
        #expect(await Self.refusals(limiter, Self.request(alice, tool: "read_file"), count: 5).allSatisfy { $0 == nil })
    }

    @Test func byClientCountsTheOAuthClientAndWithoutACallerTheAddress() async throws {
        let limiter = Self.limiter(RateLimitConfiguration(limit: .init(average: 1, period: .seconds(60)), by: .client))
        // Two users of one client share its allowance.
        #expect(await Self.refusals(limiter, Self.request(try Self.caller("local:alice", client: "shared")), count: 1) == [nil])
        #expect(await Self.refusals(limiter, Self.request(try Self.caller("local:bob", client: "shared")), count: 1).first! != nil)
        // No verified caller (auth: none): per address.
        #expect(await Self.refusals(limiter, Self.request(nil, ip: "198.51.100.1"), count: 2).map { $0 == nil } == [true, false])
        #expect(await Self.refusals(limiter, Self.request(nil, ip: "198.51.100.2"), count: 1) == [nil])
    }

    @Test func aStoreThatCannotAnswerDeniesOrAllowsAsConfigured() async throws {
        let alice = try Self.caller("local:alice")
        let deny = Self.limiter(RateLimitConfiguration(limit: .init(average: 1)), store: UnavailableStore())
        guard case .storeUnavailable? = (await Self.refusals(deny, Self.request(alice), count: 1)).first! else {
            Issue.record("onStoreError: deny let the request through")
            return
        }
        let allow = Self.limiter(RateLimitConfiguration(limit: .init(average: 1), onStoreError: .allow), store: UnavailableStore())
        #expect(await Self.refusals(allow, Self.request(alice), count: 3) == [nil, nil, nil])
    }
}

/// The key per-address limits count under: canonical IPv4 addresses are taken as they are (asked
/// on every request), everything else through the address parser, with the same result.
@Suite struct AddressLimitKeyTests {
    @Test func theIPv4ShortcutAgreesWithTheParser() {
        let addresses = [
            "10.0.0.1", "0.0.0.0", "255.255.255.255", "192.0.2.7", "192.168.001.1", "010.0.0.1", "256.1.1.1", "1.2.3", "1.2.3.4.5",
            "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", "::ffff:10.0.0.1", "2001:db8::1", "2001:db8::2:3", "1.2.3.1000", "not an address", "",
        ]
        for address in addresses {
            #expect(ClientAddress.limitKey(address) == (IPAddress(address)?.rateLimitKey ?? address), "\(address)")
        }
        #expect(ClientAddress.limitKey("2001:db8::1") == ClientAddress.limitKey("2001:db8::2:3"))
        #expect(ClientAddress.limitKey(nil) == "unknown")
    }
}

/// The callback form the fast relay uses decides as `admit` does, on the same allowance.
@Suite struct RateLimiterCallbackTests {
    static func decide(_ limiter: RateLimiter, _ request: MiddlewareRequest) async -> GatewayError? {
        await withCheckedContinuation { done in
            switch limiter.admitNow(request) {
            case .proceed: done.resume(returning: nil)
            case .refused(let refusal): done.resume(returning: refusal)
            case .pending(let wait): wait { done.resume(returning: $0) }
            }
        }
    }

    @Test func theCallbackCountsAgainstTheSameAllowanceAsAdmit() async throws {
        let limiter = RateLimiterTests.limiter(RateLimitConfiguration(limit: .init(average: 2, period: .seconds(60))))
        #expect(limiter.decidesWithoutTask)
        let alice = try RateLimiterTests.caller("local:alice")
        #expect(await RateLimiterTests.refusals(limiter, RateLimiterTests.request(alice), count: 1) == [nil])
        #expect(await Self.decide(limiter, RateLimiterTests.request(alice)) == nil)
        guard case .rateLimited(let refusal)? = await Self.decide(limiter, RateLimiterTests.request(alice)) else {
            Issue.record("the third request was not refused")
            return
        }
        #expect(refusal.retryAfterSeconds == 30)
    }

    @Test func whatTheStoreDecidesAtOnceIsTheVerdictAtOnceAndAnAskWaits() async throws {
        let alice = try RateLimiterTests.caller("local:alice")
        // The memory store always decides at once: no callback is needed for either verdict.
        let limiter = RateLimiterTests.limiter(RateLimitConfiguration(limit: .init(average: 1, period: .seconds(60))))
        guard case .proceed = limiter.admitNow(RateLimiterTests.request(alice)) else {
            Issue.record("the first request was not admitted at once")
            return
        }
        guard case .refused(.rateLimited) = limiter.admitNow(RateLimiterTests.request(alice)) else {
            Issue.record("the second request was not refused at once")
            return
        }
        // A store that must be asked: the verdict comes through the wait (here, its failure).
        let asking = RateLimiterTests.limiter(RateLimitConfiguration(limit: .init(average: 1)), store: UnavailableStore())
        guard case .pending(let wait) = asking.admitNow(RateLimiterTests.request(alice)) else {
            Issue.record("a store that must be asked decided at once")
            return
        }
        let verdict = await withCheckedContinuation { done in wait { done.resume(returning: $0) } }
        guard case .storeUnavailable? = verdict else {
            Issue.record("the ask's failure did not deny")
            return
        }
    }

    @Test func aStoreFailureByCallbackDeniesOrAllowsAsConfigured() async throws {
        let alice = try RateLimiterTests.caller("local:alice")
        let deny = RateLimiterTests.limiter(RateLimitConfiguration(limit: .init(average: 1)), store: UnavailableStore())
        #expect(deny.decidesWithoutTask)
        guard case .storeUnavailable? = await Self.decide(deny, RateLimiterTests.request(alice)) else {
            Issue.record("onStoreError: deny let the request through")
            return
        }
        let allow = RateLimiterTests.limiter(RateLimitConfiguration(limit: .init(average: 1), onStoreError: .allow), store: UnavailableStore())
        #expect(await Self.decide(allow, RateLimiterTests.request(alice)) == nil)
    }
}

/// The store key each request counts against: one per router, allowance and caller, written in
/// full (keys are built byte by byte on every request).
@Suite struct RateLimiterKeyTests {
    @Test func eachAllowanceHasItsOwnKeyWrittenInFull() throws {
        let store = KeyRecordingStore()
        let limiter = RateLimiter(name: "limit", configuration: RateLimitConfiguration(
            limit: .init(average: 5, period: .seconds(60)), tools: [("delete_*", .init(average: 1, period: .seconds(60)))]
        ), store: store)
        let alice = try RateLimiterTests.caller("local:alice"), someone = try RateLimiterTests.caller("github:Zoë-ünïcödé-😀")
        for request in [
            RateLimiterTests.request(alice), RateLimiterTests.request(alice, tool: "delete_all"), RateLimiterTests.request(alice, tool: "read"),
            RateLimiterTests.request(nil, ip: "192.0.2.7"), RateLimiterTests.request(someone),
        ] {
            guard case .proceed = limiter.admitNow(request) else {
                Issue.record("the recording store admits every request")
                return
            }
        }
        #expect(store.keys.withLock { $0 } == [
            "ratelimit:mw:limit:r:*:user:local:alice",
            "ratelimit:mw:limit:r:tool:delete_*:user:local:alice",
            "ratelimit:mw:limit:r:*:user:local:alice",
            "ratelimit:mw:limit:r:*:ip:" + ClientAddress.limitKey("192.0.2.7"),
            "ratelimit:mw:limit:r:*:user:github:Zoë-ünïcödé-😀",
        ])
    }
}

/// Admits every request (by callback, as the fast relay asks) and remembers the key it counted
/// against.
final class KeyRecordingStore: FailingStore, CallbackRateLimiting, Sendable {
    let keys = Mutex<[String]>([])

    func rateLimitNow(_ key: String, interval: Duration, burst: Int) -> RateLimitAttempt {
        keys.withLock { $0.append(key) }
        return .decided(RateLimitDecision(allowed: true, remaining: 1, retryAfter: .zero, resetAfter: .zero))
    }

    func rateLimit(asking: RateLimitAsk, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void) {
        completion(.failure(.unavailable("not asked")))
    }
}

extension GatewayError: Equatable {
    package static func == (lhs: GatewayError, rhs: GatewayError) -> Bool { lhs.reason == rhs.reason }
}

/// A store whose every call fails as an unreachable Redis does (what the tests' stores do not
/// use fails the same way).
protocol FailingStore: KeyValueStore {}

extension FailingStore {
    func get(_ key: String) async throws(StoreError) -> [UInt8]? { throw .unavailable("down") }
    func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) { throw .unavailable("down") }
    func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool { throw .unavailable("down") }
    func take(_ key: String) async throws(StoreError) -> [UInt8]? { throw .unavailable("down") }
    func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool { throw .unavailable("down") }
    func delete(_ keys: [String]) async throws(StoreError) -> Int { throw .unavailable("down") }
    func increment(_ key: String, window: Duration) async throws(StoreError) -> Int { throw .unavailable("down") }
    func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision { throw .unavailable("down") }
    func timeToLive(_ key: String) async throws(StoreError) -> Duration? { throw .unavailable("down") }
    func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError) { throw .unavailable("down") }
    func setMembers(_ key: String) async throws(StoreError) -> [String] { throw .unavailable("down") }
    func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError) { throw .unavailable("down") }
    func ping() async throws(StoreError) { throw .unavailable("down") }
}

struct UnavailableStore: FailingStore {}

extension UnavailableStore: CallbackRateLimiting {
    func rateLimitNow(_ key: String, interval: Duration, burst: Int) -> RateLimitAttempt {
        .ask(RateLimitAsk(key: key, interval: interval.wholeMilliseconds, burst: burst, wanted: 1, now: 0))
    }

    func rateLimit(asking: RateLimitAsk, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void) {
        completion(.failure(.unavailable("down")))
    }
}
