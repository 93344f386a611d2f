public import GatewayStore
import Crypto
import Foundation
package import NIOCore
import NIOPosix
import Synchronization
import ThreadShards

/// ``KeyValueStore`` on Redis through hiredis: a small pool of connections, each on its own
/// thread, every key under `keyPrefix`.
public final class RedisStore: KeyValueStore, CallbackRateLimiting {
    private let connections: [RedisConnection]
    private let next = Atomic<Int>(0)
    public let keyPrefix: String
    private let endpoint: RedisEndpoint
    private let timeout: Duration
    private let clock: @Sendable () -> NIODeadline
    /// One connection per event loop that asked (see `RedisLoopConnection`), by the loop's identity.
    private let loopConnections = Mutex<[ObjectIdentifier: RedisLoopConnection]>([:])
    private static let rateLimitScriptSHA = Array(Insecure.SHA1.hash(data: Array(rateLimitScript.utf8)).map { String(format: "%02x", $0) }.joined().utf8)

    /// Increments a counter and starts its expiry window on the first increment, atomically.
    /// Compare-and-set keeping the key's TTL (KEEPTTL: Redis 6.0 and later).
    private static let replaceScript = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 end return 0"

    private static let incrementScript = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n"

    /// ``RateLimitCell`` in one atomic step, on the Redis server's clock (so every gateway
    /// instance counts against the same time), for `ARGV[3]` requests at once (default 1; the
    /// instance reserves the others, see `RateLimitReserves`): grants as many as the burst allows
    /// now, at most that many, at least one or none. Times are microseconds (exact in Lua's
    /// doubles until the year 2255). Returns allowed (0/1), remaining, retry-after and
    /// reset-after in microseconds, and the number granted.
    private static let rateLimitScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local interval = tonumber(ARGV[1])
        local burst = tonumber(ARGV[2])
        local wanted = tonumber(ARGV[3]) or 1
        local tat = tonumber(redis.call('GET', KEYS[1])) or now
        if tat < now then tat = now end
        local available = math.floor((now - tat) / interval) + burst
        if available < 1 then return {0, 0, tat + interval - burst * interval - now, tat - now, 0} end
        local granted = math.min(wanted, available)
        local nextTat = tat + granted * interval
        redis.call('SET', KEYS[1], string.format('%d', nextTat), 'PX', math.ceil((nextTat - now) / 1000))
        return {1, available - granted, 0, nextTat - now, granted}
        """

    /// Appended to a rate limit's key: its TAT is in microseconds. Until 2026-12 it was in
    /// milliseconds under the bare key; an instance of an older version still running on the
    /// same Redis (a rolling upgrade) keeps its own cell rather than misreading this one.
    private static let rateLimitKeySuffix = ":us"

    /// Tokens this instance took ahead of use for hot keys (limits with a burst of 32 or more):
    /// a table per event loop, so the loops (each checking a limit on every request the fast
    /// relay carries) do not write one shared table from both cores, and one for checks made in
    /// tasks (which move between threads). An ask's reply goes to the table it was taken from.
    private let loopReserves = PerThread { RateLimitReserves() }
    private let taskReserves = Mutex(RateLimitReserves())
    /// `RateLimitAsk.origin` of an ask taken from `taskReserves`.
    private static let taskTable = -1

    public convenience init?(url: String, keyPrefix: String, connections: Int = 4, timeout: Duration = .seconds(2)) {
        self.init(url: url, keyPrefix: keyPrefix, connections: connections, timeout: timeout, clock: { .now() })
    }

    /// `clock`: the clock every connection's reconnect backoff reads (tests move it on instead of
    /// waiting the backoff out).
    package init?(url: String, keyPrefix: String, connections: Int = 4, timeout: Duration = .seconds(2), clock: @escaping @Sendable () -> NIODeadline) {
        guard let endpoint = RedisEndpoint(url: url) else { return nil }
        self.keyPrefix = keyPrefix
        self.endpoint = endpoint
        self.timeout = timeout
        self.clock = clock
        self.connections = (0..<max(1, connections)).map { _ in RedisConnection(endpoint: endpoint, timeout: timeout, now: clock) }
    }

    public func shutdown() async {
        for connection in connections { await connection.shutdown() }
        let onLoops = loopConnections.withLock { connections in
            defer { connections.removeAll() }
            return Array(connections.values)
        }
        for connection in onLoops {
            try? await connection.loop.submit { connection.close() }.get()
        }
    }

    private func key(_ key: String) -> [UInt8] { Array((keyPrefix + key).utf8) }

    private func run(_ arguments: [[UInt8]]) async throws(StoreError) -> RedisValue {
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue % connections.count
        let replies = try await connections[index].pipeline([arguments])
        guard let reply = replies.first else { throw .unavailable("no reply") }
        if case .error(let message) = reply { throw .rejected(message) }
        return reply
    }

    private func run(_ words: String...) async throws(StoreError) -> RedisValue {
        try await run(words.map { Array($0.utf8) })
    }

    public func get(_ key: String) async throws(StoreError) -> [UInt8]? {
        try await run([Array("GET".utf8), self.key(key)]).bytes
    }

    public func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) {
        var command = [Array("SET".utf8), self.key(key), value]
        if let ttl { command += [Array("PX".utf8), Array(String(max(1, ttl.wholeMilliseconds)).utf8)] }
        _ = try await run(command)
    }

    public func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool {
        var command = [Array("SET".utf8), self.key(key), value, Array("NX".utf8)]
        if let ttl { command += [Array("PX".utf8), Array(String(max(1, ttl.wholeMilliseconds)).utf8)] }
        return try await run(command) != .null
    }

    public func take(_ key: String) async throws(StoreError) -> [UInt8]? {
        try await run([Array("GETDEL".utf8), self.key(key)]).bytes
    }

    public func delete(_ keys: [String]) async throws(StoreError) -> Int {
        guard !keys.isEmpty else { return 0 }
        return Int(try await run([Array("DEL".utf8)] + keys.map { self.key($0) }).integer ?? 0)
    }

    public func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool {
        let reply = try await run([Array("EVAL".utf8), Array(Self.replaceScript.utf8), Array("1".utf8), self.key(key), expected, value])
        if case .error(let message) = reply { throw .rejected(message) }
        return reply.integer == 1
    }

    public func increment(_ key: String, window: Duration) async throws(StoreError) -> Int {
        let reply = try await run([
            Array("EVAL".utf8), Array(Self.incrementScript.utf8), Array("1".utf8), self.key(key),
            Array(String(max(1, window.wholeMilliseconds)).utf8),
        ])
        return Int(reply.integer ?? 0)
    }

    public func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision {
        switch rateLimitNow(key, interval: interval, burst: burst) {
        case .decided(let decision): return decision
        case .ask(let ask): return try await rateLimit(asking: ask)
        }
    }

    /// An ask on the shared connections (from a task).
    private func rateLimit(asking ask: RateLimitAsk) async throws(StoreError) -> RateLimitDecision {
        let arguments = scriptArguments(ask)
        let reply: RedisValue
        do {
            reply = try await run([Array("EVALSHA".utf8), Self.rateLimitScriptSHA, Array("1".utf8)] + arguments)
        } catch .rejected(let message) where message.hasPrefix("NOSCRIPT") {
            // Redis does not have the script yet (a restart, SCRIPT FLUSH): sent in full once.
            reply = try await run([Array("EVAL".utf8), Array(Self.rateLimitScript.utf8), Array("1".utf8)] + arguments)
        }
        return try noted(reply, ask: ask)
    }

    /// What the reserves say of a request (both paths ask this first): admitted from this
    /// instance's reserve, refused again before the retry-after Redis gave the last refusal, or
    /// the script to ask for this many tokens.
    public func rateLimitNow(_ key: String, interval: Duration, burst: Int) -> RateLimitAttempt {
        let now = Self.milliseconds()
        let (interval, burst) = (max(1, interval.wholeMicroseconds), max(1, burst))
        let table = MultiThreadedEventLoopGroup.currentEventLoop == nil ? Self.taskTable : loopReserves.currentIndex
        switch withReserves(table, { $0.take(key, interval: interval, burst: burst, now: now) }) {
        case .ask(let count):
            return .ask(RateLimitAsk(key: key, interval: interval, burst: burst, wanted: count, now: now, origin: table))
        case .admitted(let left):
            return .decided(RateLimitDecision(allowed: true, remaining: left, retryAfter: .zero, resetAfter: .zero))
        case .admittedToppingUp(let left, let count):
            // The reply tops the reserve up (`noted`); the request goes on now.
            rateLimit(asking: RateLimitAsk(key: key, interval: interval, burst: burst, wanted: count, now: now, origin: table, topUp: true)) { _ in }
            return .decided(RateLimitDecision(allowed: true, remaining: left, retryAfter: .zero, resetAfter: .zero))
        case .refused(let retryAfter):
            return .decided(RateLimitDecision(allowed: false, remaining: 0, retryAfter: .milliseconds(retryAfter), resetAfter: .milliseconds(retryAfter)))
        }
    }

    /// The script's key and arguments (after the script or its hash and the key count).
    private func scriptArguments(_ ask: RateLimitAsk) -> [[UInt8]] {
        [self.key(ask.key + Self.rateLimitKeySuffix), Array(String(ask.interval).utf8), Array(String(ask.burst).utf8), Array(String(ask.wanted).utf8)]
    }

    /// The script's decision, with what it granted beyond the request reserved.
    private func noted(_ reply: RedisValue, ask: RateLimitAsk) throws(StoreError) -> RateLimitDecision {
        if case .error(let message) = reply { throw .rejected(message) }
        guard case .array(let values) = reply, values.count == 5, let allowed = values[0].integer, let remaining = values[1].integer,
              let retry = values[2].integer, let reset = values[3].integer, let granted = values[4].integer
        else { throw .rejected("unexpected reply to the rate limit script") }
        let decision = RateLimitDecision(allowed: allowed == 1, remaining: Int(remaining), retryAfter: .microseconds(retry), resetAfter: .microseconds(reset))
        withReserves(ask.origin) { reserves in
            if decision.allowed {
                reserves.granted(ask.key, interval: ask.interval, burst: ask.burst, granted: Int(granted), asked: ask.wanted, now: ask.now, topUp: ask.topUp)
            } else {
                reserves.refused(ask.key, interval: ask.interval, burst: ask.burst, retryAfter: (retry + 999) / 1000, now: ask.now, topUp: ask.topUp)
            }
        }
        return decision
    }

    private func withReserves<Result>(_ table: Int, _ body: (inout RateLimitReserves) -> Result) -> Result {
        table == Self.taskTable ? taskReserves.withLock { body(&$0) } : loopReserves.withLock(at: table) { body(&$0) }
    }

    /// This process's monotonic clock in milliseconds (reserves lapse by it).
    private static func milliseconds() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
    }

    /// An ask without a task. Called on an event loop (the fast relay), the script runs on that
    /// loop's own connection and `completion` is called on the loop; elsewhere it runs on the
    /// shared connections in a task. `EVALSHA` first (on either path): the script is sent in
    /// full only when Redis does not have it yet (after a restart or `SCRIPT FLUSH`).
    public func rateLimit(asking ask: RateLimitAsk, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void) {
        guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            Task {
                do throws(StoreError) { completion(.success(try await rateLimit(asking: ask))) } catch { completion(.failure(error)) }
            }
            return
        }
        let connection = loopConnection(for: loop)
        let arguments = scriptArguments(ask)
        let decide: @Sendable (Result<RedisValue, StoreError>) -> Void = { [self] result in
            completion(result.flatMap { reply in
                Result { () throws(StoreError) in try noted(reply, ask: ask) }
            })
        }
        connection.send([Array("EVALSHA".utf8), Self.rateLimitScriptSHA, Array("1".utf8)] + arguments) { result in
            if case .success(.error(let message)) = result, message.hasPrefix("NOSCRIPT") {
                connection.send([Array("EVAL".utf8), Array(Self.rateLimitScript.utf8), Array("1".utf8)] + arguments, reply: decide)
                return
            }
            decide(result)
        }
    }

    private func loopConnection(for loop: any EventLoop) -> RedisLoopConnection {
        loopConnections.withLock { connections in
            if let existing = connections[ObjectIdentifier(loop)] { return existing }
            let created = RedisLoopConnection(loop: loop, endpoint: endpoint, timeout: timeout, now: clock)
            connections[ObjectIdentifier(loop)] = created
            return created
        }
    }

    public func timeToLive(_ key: String) async throws(StoreError) -> Duration? {
        guard let millis = try await run([Array("PTTL".utf8), self.key(key)]).integer, millis >= 0 else { return nil }
        return .milliseconds(millis)
    }

    public func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError) {
        guard !members.isEmpty else { return }
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue % connections.count
        var commands = [[Array("SADD".utf8), self.key(key)] + members.map { Array($0.utf8) }]
        if let ttl { commands.append([Array("PEXPIRE".utf8), self.key(key), Array(String(max(1, ttl.wholeMilliseconds)).utf8)]) }
        let replies = try await connections[index].pipeline(commands)
        for reply in replies {
            if case .error(let message) = reply { throw .rejected(message) }
        }
    }

    public func setMembers(_ key: String) async throws(StoreError) -> [String] {
        guard case .array(let values) = try await run([Array("SMEMBERS".utf8), self.key(key)]) else { return [] }
        return values.compactMap { $0.bytes.map { String(decoding: $0, as: UTF8.self) } }.sorted()
    }

    public func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError) {
        guard !members.isEmpty else { return }
        if case .error(let message) = try await run([Array("SREM".utf8), self.key(key)] + members.map { Array($0.utf8) }) { throw .rejected(message) }
    }

    public func ping() async throws(StoreError) {
        _ = try await run("PING")
    }
}
