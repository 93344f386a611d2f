import Foundation
import GatewayRedis
import GatewayStore
import NIOCore
import NIOPosix
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real redis-server on a free loopback port, started and stopped (by PID) by the test.
final class RedisServer: @unchecked Sendable {
    let port: Int
    /// `requirepass`, when set.
    let password: String?
    private var process: Process?
    /// Yields once redis-server has logged that it accepts connections (ends without: it exited).
    private var readiness: AsyncStream<Void>?
    /// Whether this run of the server said it was ready (one reading serves every store).
    private var started = false

    init(password: String? = nil) throws {
        port = Self.freePort()
        self.password = password
        try start()
    }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
            + (password.map { ["--requirepass", $0] } ?? [])
        // Its log (stdout) says when it accepts connections: `waitReady` waits for that line.
        let output = Pipe()
        let (ready, signal) = AsyncStream<Void>.makeStream()
        let seen = Mutex<String?>("")
        output.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            guard !data.isEmpty else {
                // Exited (or closed its output) without saying it was ready.
                handle.readabilityHandler = nil
                signal.finish()
                return
            }
            let nowReady = seen.withLock { text -> Bool in
                guard let earlier = text else { return false }  // ready already: the rest is read and dropped
                let all = earlier + String(decoding: data, as: UTF8.self)
                guard all.contains("Ready to accept connections") else {
                    text = all
                    return false
                }
                text = nil
                return true
            }
            if nowReady {
                signal.yield()
                signal.finish()
            }
        }
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.readiness = ready
        self.started = false
    }

    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit { stop() }

    var url: String { "redis://127.0.0.1:\(port)/0" }

    /// Waits for redis-server's own word that it accepts connections (its log line), then until
    /// `store` gets through. A store whose calls failed while the server was down (the restart
    /// tests) lets the next one through only after its reconnect backoff (at most 2 s), which no
    /// event announces: only then is PING asked again.
    /// Until the server said it accepts connections; then the store must get through at once.
    /// (After a restart, the test moves the store's backoff clock past its reconnect backoff
    /// first: nothing here waits on time.)
    func waitReady(_ store: RedisStore) async throws {
        if !started, let readiness {
            for await _ in readiness { started = true }
        }
        guard started else {
            Issue.record("redis-server on port \(port) exited before it was ready")
            return
        }
        do {
            try await store.ping()
        } catch {
            Issue.record("redis-server on port \(port) is ready, but the store did not get through: \(error)")
        }
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// One suite of behaviours every store must have, run against each implementation.
enum StoreConformance {
    /// `advance`: moves the store's clock on (the memory store's); nil for a store whose keys
    /// expire on a server's own clock (Redis), where the TTL the server holds is checked instead.
    static func run(_ store: any KeyValueStore, advance: (@Sendable (Duration) -> Void)? = nil) async throws {
        let unique = UUID().uuidString
        func k(_ name: String) -> String { "\(unique):\(name)" }

        #expect(try await store.get(k("missing")) == nil)
        try await store.set(k("a"), Array("alpha".utf8), ttl: nil)
        #expect(try await store.get(k("a")) == Array("alpha".utf8))
        #expect(try await store.timeToLive(k("a")) == nil)

        // Binary values survive unchanged.
        let binary: [UInt8] = [0, 1, 2, 255, 10, 13, 0]
        try await store.set(k("bin"), binary, ttl: .seconds(60))
        #expect(try await store.get(k("bin")) == binary)
        let ttl = try await store.timeToLive(k("bin"))
        #expect(ttl != nil && ttl! > .seconds(50) && ttl! <= .seconds(60))

        #expect(try await store.setIfAbsent(k("once"), [1], ttl: .seconds(60)) == true)
        #expect(try await store.setIfAbsent(k("once"), [2], ttl: .seconds(60)) == false)
        #expect(try await store.get(k("once")) == [1])

        // Compare-and-set: only over the expected value, keeping the TTL; one winner of many.
        try await store.set(k("cas"), Array("owner:a".utf8), ttl: .seconds(60))
        #expect(try await store.replaceIfEqual(k("cas"), expected: Array("owner:z".utf8), with: Array("owner:b".utf8)) == false)
        #expect(try await store.replaceIfEqual(k("missing-cas"), expected: Array("owner:a".utf8), with: Array("owner:b".utf8)) == false)
        #expect(try await store.get(k("missing-cas")) == nil)
        let casWinners = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<10 {
                group.addTask { (try? await store.replaceIfEqual(k("cas"), expected: Array("owner:a".utf8), with: Array("owner:\(index)".utf8))) ?? false }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(casWinners == 1)
        #expect(try await store.get(k("cas")) != Array("owner:a".utf8))
        let casTTL = try await store.timeToLive(k("cas"))
        #expect(casTTL != nil && casTTL! > .seconds(50))

        // take: single use, atomically, even under concurrent attempts.
        try await store.set(k("code"), Array("c0de".utf8), ttl: .seconds(60))
        let winners = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 {
                group.addTask { (try? await store.take(k("code"))) != nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(winners == 1)
        #expect(try await store.get(k("code")) == nil)

        // Expiry: the key is there until its TTL has passed, and gone after.
        try await store.set(k("short"), [9], ttl: .milliseconds(100))
        #expect(try await store.get(k("short")) == [9])
        if let advance {
            advance(.milliseconds(99))
            #expect(try await store.get(k("short")) == [9])
            advance(.milliseconds(2))
            #expect(try await store.get(k("short")) == nil)
        } else {
            // Redis expires it by its own clock; what the store owes is the TTL it handed over.
            let left = try #require(try await store.timeToLive(k("short")))
            #expect(left > .zero && left <= .milliseconds(100))
        }

        #expect(try await store.increment(k("rate"), window: .seconds(60)) == 1)
        #expect(try await store.increment(k("rate"), window: .seconds(60)) == 2)
        #expect(try await store.timeToLive(k("rate")) != nil)

        // A rate limit: `burst` at once, then refused until an interval has passed; concurrent
        // requests never get more than the burst between them.
        var decisions: [RateLimitDecision] = []
        for _ in 0..<4 { decisions.append(try await store.rateLimit(k("cell"), interval: .seconds(60), burst: 3)) }
        #expect(decisions.map(\.allowed) == [true, true, true, false])
        #expect(decisions.map(\.remaining) == [2, 1, 0, 0])
        #expect(decisions[3].retryAfter > .seconds(55) && decisions[3].retryAfter <= .seconds(60))
        #expect(decisions[2].resetAfter > .seconds(175) && decisions[2].resetAfter <= .seconds(180))
        // More than a thousand a second: an interval under a millisecond (4,000 a second here) is
        // kept as it is, not rounded up to one (which capped every limit at 1,000 a second).
        let fast = try await store.rateLimit(k("fast"), interval: .microseconds(250), burst: 20)
        #expect(fast.allowed && fast.remaining == 19 && fast.resetAfter == .microseconds(250))
        // A failed call is a failure of its own (not one refusal fewer): under load a reply may be
        // late, and the count alone would not say so.
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<12 {
                group.addTask { try await store.rateLimit(k("crowd"), interval: .seconds(60), burst: 5).allowed }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == 5)

        try await store.addToSet(k("family"), ["t1", "t2"], ttl: .seconds(60))
        try await store.addToSet(k("family"), ["t2", "t3"], ttl: .seconds(60))
        #expect(try await store.setMembers(k("family")) == ["t1", "t2", "t3"])
        try await store.removeFromSet(k("family"), ["t1", "t9"])
        #expect(try await store.setMembers(k("family")) == ["t2", "t3"])
        try await store.removeFromSet(k("family"), ["t2", "t3"])
        #expect(try await store.setMembers(k("family")) == [])

        #expect(try await store.delete([k("a"), k("bin"), k("nope")]) == 2)
        #expect(try await store.get(k("a")) == nil)
        try await store.ping()
    }
}

@Suite struct MemoryStoreTests {
    @Test func conformance() async throws {
        let clock = MovableInstant()
        try await StoreConformance.run(MemoryStore(now: { clock.now() }), advance: { clock.advance($0) })
    }
}

@Suite(.serialized) struct RedisStoreTests {
    @Test func conformance() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let store = try #require(RedisStore(url: server.url, keyPrefix: "test:"))
        try await server.waitReady(store)
        try await StoreConformance.run(store)
        await store.shutdown()
    }

    @Test func keysCarryThePrefix() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        #expect(server.port > 1024)
        let prefixed = try #require(RedisStore(url: server.url, keyPrefix: "gw1:"))
        let bare = try #require(RedisStore(url: server.url, keyPrefix: ""))
        try await server.waitReady(prefixed)
        try await prefixed.set("k", Array("v".utf8), ttl: .seconds(10))
        #expect(try await bare.get("gw1:k") == Array("v".utf8))
        #expect(try await bare.get("k") == nil)
        // Ask the server itself (redis-cli, not our client) what it holds.
        let cli = Process()
        cli.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        cli.arguments = ["-p", "\(server.port)", "--raw", "EXISTS", "gw1:k"]
        let pipe = Pipe()
        cli.standardOutput = pipe
        try cli.run()
        cli.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        await prefixed.shutdown()
        await bare.shutdown()
    }

    @Test func unreachableRedisFailsFastAndRecoversWithoutRestart() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        // The backoff clock, moved past the reconnect backoff once Redis is back.
        let clock = MovableClock()
        let store = try #require(RedisStore(url: server.url, keyPrefix: "t:", connections: 1, timeout: .seconds(1), clock: { @Sendable in clock.now() }))
        try await server.waitReady(store)
        try await store.set("before", [1], ttl: nil)

        server.stop()
        let started = ContinuousClock.now
        await #expect(throws: StoreError.self) { try await store.get("before") }
        #expect(ContinuousClock.now - started < .seconds(3))
        // While reconnecting, calls fail at once with "unavailable", not after a timeout.
        do {
            _ = try await store.get("before")
            Issue.record("expected the store to be unavailable")
        } catch {
            if case .unavailable = error {} else { Issue.record("unexpected \(error)") }
        }

        try server.start()
        clock.advance(seconds: 3)
        try await server.waitReady(store)
        try await store.set("after", [2], ttl: nil)
        #expect(try await store.get("after") == [2])
        await store.shutdown()
    }

    /// The fast relay's rate limit: on an event loop, by that loop's own connection, answered on
    /// the loop; the same allowance as the task path counts against.
    @Test func rateLimitOnAnEventLoopSharesTheAllowanceAndAnswersOnTheLoop() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        // The loop connection's backoff clock, moved on by the test instead of waiting it out.
        let clock = MovableClock()
        let made = RedisStore(url: server.url, keyPrefix: "t:", connections: 1, timeout: .seconds(1), clock: { @Sendable in clock.now() })
        let store = try #require(made)
        try await server.waitReady(store)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        func onLoop(_ key: String, burst: Int = 3) async -> (Result<RateLimitDecision, StoreError>, onLoop: Bool) {
            await withCheckedContinuation { done in
                loop.execute {
                    store.rateLimit(key, interval: .seconds(60), burst: burst) { result in done.resume(returning: (result, loop.inEventLoop)) }
                }
            }
        }
        // Two through the task path, then the loop's: the third is the last of the burst of 3.
        #expect(try await store.rateLimit("shared", interval: .seconds(60), burst: 3).allowed)
        #expect(try await store.rateLimit("shared", interval: .seconds(60), burst: 3).allowed)
        let third = await onLoop("shared")
        #expect(third.onLoop)
        #expect((try? third.0.get())?.allowed == true)
        let fourth = await onLoop("shared")
        let refused = try #require(try? fourth.0.get())
        #expect(!refused.allowed && refused.retryAfter > .seconds(50))
        #expect(try await store.rateLimit("shared", interval: .seconds(60), burst: 3).allowed == false)

        // Redis forgot the script (a restart, SCRIPT FLUSH): sent in full once, then by its hash.
        try runCLI(port: server.port, "SCRIPT", "FLUSH")
        #expect((try? await onLoop("other").0.get())?.allowed == true)
        #expect((try? await onLoop("other").0.get())?.allowed == true)
        // The task path too.
        try runCLI(port: server.port, "SCRIPT", "FLUSH")
        #expect(try await store.rateLimit("tasks", interval: .seconds(60), burst: 3).allowed)
        #expect(try await store.rateLimit("tasks", interval: .seconds(60), burst: 3).allowed)

        // Redis gone: refused at once with "unavailable", then back without a restart.
        server.stop()
        let started = ContinuousClock.now
        guard case .failure(.unavailable) = await onLoop("third").0 else { Issue.record("expected unavailable"); return }
        #expect(ContinuousClock.now - started < .seconds(3))
        // While backing off, calls fail at once without trying.
        guard case .failure(.unavailable) = await onLoop("third").0 else { Issue.record("expected unavailable while backing off"); return }
        // The task path finds Redis gone too (and drops its connection to it).
        await #expect(throws: StoreError.self) { try await store.get("down") }
        try server.start()
        // Past the backoff (at most 2 s), the next call of either path connects again.
        clock.advance(seconds: 3)
        try await server.waitReady(store)
        let recovered = await onLoop("third").0
        #expect((try? recovered.get())?.allowed == true)
        await store.shutdown()
    }

    /// The event loop's connection authenticates as the hiredis ones do; a wrong password fails
    /// the calls (and is not retried on every one) without any reaching Redis unauthenticated.
    @Test func theLoopConnectionAuthenticates() async throws {
        let server = try RedisServer(password: "s3cret-pass")
        defer { server.stop() }
        let store = try #require(RedisStore(url: "redis://:s3cret-pass@127.0.0.1:\(server.port)/2", keyPrefix: "t:", connections: 1, timeout: .seconds(1)))
        try await server.waitReady(store)
        let wrong = try #require(RedisStore(url: "redis://:wrong@127.0.0.1:\(server.port)/0", keyPrefix: "t:", connections: 1, timeout: .seconds(1)))
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        func onLoop(_ store: RedisStore, _ key: String) async -> Result<RateLimitDecision, StoreError> {
            await withCheckedContinuation { done in
                loop.execute { store.rateLimit(key, interval: .seconds(60), burst: 1) { done.resume(returning: $0) } }
            }
        }
        #expect((try? await onLoop(store, "k").get())?.allowed == true)
        #expect((try? await onLoop(store, "k").get())?.allowed == false)
        // Counted in database 2 (SELECT), where the task path counts too.
        #expect(try await store.rateLimit("k", interval: .seconds(60), burst: 1).allowed == false)
        for _ in 0..<3 {
            guard case .failure = await onLoop(wrong, "k") else { Issue.record("a wrong password was let through"); return }
        }
        await store.shutdown()
        await wrong.shutdown()
    }

    @discardableResult
    private func runCLI(port: Int, _ arguments: String...) throws -> String {
        let cli = Process()
        cli.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        cli.arguments = ["-p", "\(port)"] + arguments
        let output = Pipe()
        cli.standardOutput = output
        try cli.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        cli.waitUntilExit()
        #expect(cli.terminationStatus == 0)
        return text
    }

    /// Calls of the rate limit script so far (EVAL and EVALSHA), from `INFO commandstats`.
    private func scriptCalls(port: Int) throws -> Int {
        let stats = try runCLI(port: port, "INFO", "commandstats")
        return stats.split(whereSeparator: \.isNewline).reduce(0) { total, line in
            guard line.hasPrefix("cmdstat_eval:") || line.hasPrefix("cmdstat_evalsha:"),
                  let calls = line.split(separator: ",").first?.split(separator: "=").last, let count = Int(calls)
            else { return total }
            return total + count
        }
    }

    /// A hot key with a large burst: each gateway instance (here two stores on one Redis, one
    /// asking on an event loop, one from tasks) takes tokens ahead of use, so most requests cost
    /// no round trip; hammered from both, the two together still never admit more than the burst.
    @Test func reservesSpareRoundTripsAndNeverExceedTheBurst() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let first = try #require(RedisStore(url: server.url, keyPrefix: "t:", connections: 1, timeout: .seconds(1)))
        let second = try #require(RedisStore(url: server.url, keyPrefix: "t:", connections: 1, timeout: .seconds(1)))
        try await server.waitReady(first)
        try await server.waitReady(second)
        let before = try scriptCalls(port: server.port)
        // Two event loops of one instance (each keeps its own reserve) and another instance's tasks.
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        // 320 at once, then one a minute: nothing refills while the test runs.
        let (interval, burst) = (Duration.milliseconds(187_500), 320)
        var admitted = 0
        for index in 0..<250 {
            let loop = loops.any()
            let onLoop: Result<RateLimitDecision, StoreError> = await withCheckedContinuation { done in
                loop.execute { first.rateLimit("hot", interval: interval, burst: burst) { done.resume(returning: $0) } }
            }
            if try onLoop.get().allowed { admitted += 1 }
            if index % 2 == 0, try await second.rateLimit("hot", interval: interval, burst: burst).allowed { admitted += 1 }
        }
        // Never more than the burst; less only by reserves left unused (three tables' at most).
        #expect(admitted <= burst)
        #expect(admitted >= burst - 3 * RateLimitReserves.limit(burst: burst))
        let calls = try scriptCalls(port: server.port) - before
        // The refusals after the burst too: each instance asked once, then knew until when.
        #expect(calls < 60, "500 requests took \(calls) script calls")
        // Refused again, with its time to wait.
        let refused = try await second.rateLimit("hot", interval: interval, burst: burst)
        #expect(!refused.allowed && refused.retryAfter > .seconds(60))
        // A small burst is never reserved: each request asks Redis.
        let small = try scriptCalls(port: server.port)
        for _ in 0..<5 { _ = try await first.rateLimit("small", interval: .seconds(60), burst: 31) }
        #expect(try scriptCalls(port: server.port) - small == 5)
        await first.shutdown()
        await second.shutdown()
        try await loops.shutdownGracefully()
    }

    @Test func parsesRedisURLs() throws {
        #expect(RedisStore(url: "redis://127.0.0.1:6379/0", keyPrefix: "") != nil)
        #expect(RedisStore(url: "redis://:secret@redis.internal/3", keyPrefix: "") != nil)
        #expect(RedisStore(url: "unix:///run/redis.sock", keyPrefix: "") != nil)
        #expect(RedisStore(url: "http://127.0.0.1", keyPrefix: "") == nil)
        #expect(RedisStore(url: "redis://127.0.0.1/notanumber", keyPrefix: "") == nil)
    }
}

/// NIO's clock plus an offset the test moves on.
extension CallbackRateLimiting {
    /// Both steps as the fast relay takes them: the decision at once when no round trip is
    /// needed, else the ask's answer.
    func rateLimit(_ key: String, interval: Duration, burst: Int, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void) {
        switch rateLimitNow(key, interval: interval, burst: burst) {
        case .decided(let decision): completion(.success(decision))
        case .ask(let ask): rateLimit(asking: ask, completion: completion)
        }
    }
}

/// A `ContinuousClock` reading that a test moves on (the memory store's expiry).
final class MovableInstant: Sendable {
    private let start = ContinuousClock.now
    private let offset = Atomic<Int64>(0)

    func now() -> ContinuousClock.Instant { start + .nanoseconds(offset.load(ordering: .relaxed)) }
    func advance(_ by: Duration) {
        let (seconds, attoseconds) = by.components
        offset.add(seconds * 1_000_000_000 + attoseconds / 1_000_000_000, ordering: .relaxed)
    }
}

final class MovableClock: Sendable {
    private let offset = Atomic<Int64>(0)

    func now() -> NIODeadline { .now() + .nanoseconds(offset.load(ordering: .relaxed)) }
    func advance(seconds: Int64) { offset.add(seconds * 1_000_000_000, ordering: .relaxed) }
}

/// A gateway instance's reserves of hot keys' allowance, on values (milliseconds).
@Suite struct RateLimitReservesTests {
    @Test func smallBurstsAreNeverReserved() {
        var reserves = RateLimitReserves()
        for now in Int64(0)..<10 {
            #expect(reserves.take("k", interval: 100, burst: 31, now: now) == .ask(1))
            reserves.granted("k", interval: 100, burst: 31, granted: 1, asked: 1, now: now)
        }
        #expect(reserves.count == 0)
        #expect(RateLimitReserves.limit(burst: 31) == 1)
        #expect(RateLimitReserves.limit(burst: 320) == 20)
        #expect(RateLimitReserves.limit(burst: 1_000_000) == RateLimitReserves.maxSize)
    }

    @Test func aHotKeyReservesMoreUpToTheLimit() {
        var reserves = RateLimitReserves()
        var asked: [Int] = []
        var toppedUp: [Int] = []
        var fromReserve = 0
        for now in Int64(0)..<200 {
            switch reserves.take("k", interval: 100, burst: 320, now: now) {
            case .admitted: fromReserve += 1
            case .admittedToppingUp(_, let count):
                fromReserve += 1
                toppedUp.append(count)
                reserves.granted("k", interval: 100, burst: 320, granted: count, asked: count, now: now, topUp: true)
            case .ask(let count):
                asked.append(count)
                reserves.granted("k", interval: 100, burst: 320, granted: count, asked: count, now: now)
            case .refused: Issue.record("nothing was refused")
            }
        }
        // Two requests ask the store and start the reserve; from then on it is topped up when a
        // quarter is left, to twice its size up to the limit (a sixteenth of the burst), and no
        // request asks (waits) again.
        #expect(asked == [1, 2])
        #expect(Array(toppedUp.prefix(6)) == [4, 7, 14, 16, 15, 15])
        #expect(asked.reduce(0, +) - asked.count + toppedUp.reduce(0, +) == fromReserve + reserves.reserved("k", interval: 100, burst: 320, now: 199))
        #expect(fromReserve == 198)
    }

    @Test func aReserveRunningLowIsToppedUpWhileRequestsGoOn() {
        var reserves = RateLimitReserves()
        // Burst 640: reserves of at most 40.
        reserves.granted("k", interval: 100, burst: 640, granted: 16, asked: 16, now: 0)
        for now in Int64(1)...10 { #expect(reserves.take("k", interval: 100, burst: 640, now: now) == .admitted(left: 15 - Int(now))) }
        // A quarter left: admitted, and the tokens to make it 32 are asked for.
        #expect(reserves.take("k", interval: 100, burst: 640, now: 11) == .admittedToppingUp(left: 4, ask: 28))
        // One top-up at a time.
        #expect(reserves.take("k", interval: 100, burst: 640, now: 12) == .admitted(left: 3))
        reserves.granted("k", interval: 100, burst: 640, granted: 28, asked: 28, now: 11, topUp: true)
        #expect(reserves.reserved("k", interval: 100, burst: 640, now: 12) == 31)
        #expect(reserves.take("k", interval: 100, burst: 640, now: 13) == .admitted(left: 30))
        // A top-up granted in part keeps what was granted, never more than the limit.
        var partial = RateLimitReserves()
        partial.granted("k", interval: 100, burst: 640, granted: 3, asked: 8, now: 0)
        #expect(partial.take("k", interval: 100, burst: 640, now: 1) == .admittedToppingUp(left: 1, ask: 15))
        #expect(partial.take("k", interval: 100, burst: 640, now: 2) == .admitted(left: 0))
        // Empty while the top-up is out: a request asks for itself alone.
        #expect(partial.take("k", interval: 100, burst: 640, now: 3) == .ask(1))
        partial.granted("k", interval: 100, burst: 640, granted: 5, asked: 15, now: 1, topUp: true)
        #expect(partial.reserved("k", interval: 100, burst: 640, now: 4) == 5)
        partial.granted("k", interval: 100, burst: 640, granted: 100, asked: 100, now: 4, topUp: true)
        #expect(partial.reserved("k", interval: 100, burst: 640, now: 5) == RateLimitReserves.limit(burst: 640))
    }

    @Test func aRefusedTopUpLeavesTheTokensLeftAndAsksNoMoreUntilItsRetryAfter() {
        var reserves = RateLimitReserves()
        reserves.granted("k", interval: 100, burst: 640, granted: 16, asked: 16, now: 0)
        for now in Int64(1)...10 { _ = reserves.take("k", interval: 100, burst: 640, now: now) }
        #expect(reserves.take("k", interval: 100, burst: 640, now: 11) == .admittedToppingUp(left: 4, ask: 28))
        reserves.refused("k", interval: 100, burst: 640, retryAfter: 500, now: 11, topUp: true)
        // The four left were granted: they admit requests, and no top-up is asked for.
        for (now, left) in [(Int64(12), 3), (13, 2), (14, 1), (15, 0)] {
            #expect(reserves.take("k", interval: 100, burst: 640, now: now) == .admitted(left: left))
        }
        // Then each request asks for itself (and a refusal is remembered from there).
        #expect(reserves.take("k", interval: 100, burst: 640, now: 16) == .ask(1))
        #expect(reserves.take("k", interval: 100, burst: 640, now: 510) == .ask(1))
        // After the retry-after, a reserve is asked for again.
        #expect(reserves.take("k", interval: 100, burst: 640, now: 511) == .ask(32))
    }

    @Test func whileAReservesAskIsOutOthersAskForThemselvesAlone() {
        var reserves = RateLimitReserves()
        reserves.granted("k", interval: 100, burst: 640, granted: 1, asked: 1, now: 0)
        #expect(reserves.take("k", interval: 100, burst: 640, now: 1) == .ask(2))
        // Concurrent requests (another event loop, the task path) while that ask is out.
        #expect(reserves.take("k", interval: 100, burst: 640, now: 2) == .ask(1))
        #expect(reserves.take("k", interval: 100, burst: 640, now: 3) == .ask(1))
        reserves.granted("k", interval: 100, burst: 640, granted: 1, asked: 1, now: 4)
        #expect(reserves.reserved("k", interval: 100, burst: 640, now: 4) == 0)
        reserves.granted("k", interval: 100, burst: 640, granted: 2, asked: 2, now: 5)
        #expect(reserves.reserved("k", interval: 100, burst: 640, now: 5) == 1)
        #expect(reserves.take("k", interval: 100, burst: 640, now: 6) == .admittedToppingUp(left: 0, ask: 4))
        #expect(reserves.take("k", interval: 100, burst: 640, now: 7) == .ask(1))
        // An ask the store never answered is given up after the validity (the reserve, lapsed by
        // then, starts again smaller).
        #expect(reserves.take("k", interval: 100, burst: 640, now: 6 + RateLimitReserves.validity) == .ask(1))
        #expect(reserves.take("k", interval: 100, burst: 640, now: 7 + RateLimitReserves.validity) == .ask(1))
    }

    /// However many requests ask at once, the reserve never holds more than the limit.
    @Test func concurrentAsksNeverReserveMoreThanTheLimit() {
        var reserves = RateLimitReserves()
        let limit = RateLimitReserves.limit(burst: 320)
        var now: Int64 = 0
        for _ in 0..<50 {
            var asked: [(count: Int, topUp: Bool)] = []
            for _ in 0..<16 {
                switch reserves.take("k", interval: 100, burst: 320, now: now) {
                case .ask(let count): asked.append((count, false))
                case .admittedToppingUp(_, let count): asked.append((count, true))
                case .admitted, .refused: break
                }
            }
            for (count, topUp) in asked { reserves.granted("k", interval: 100, burst: 320, granted: count, asked: count, now: now, topUp: topUp) }
            #expect(reserves.reserved("k", interval: 100, burst: 320, now: now) <= limit)
            now += 1
        }
    }

    @Test func aLapsedReserveIsDroppedAndTheNextOneSmaller() {
        var reserves = RateLimitReserves()
        reserves.granted("k", interval: 100, burst: 640, granted: 16, asked: 16, now: 0)
        #expect(reserves.reserved("k", interval: 100, burst: 640, now: 10) == 15)
        #expect(reserves.take("k", interval: 100, burst: 640, now: 10) == .admitted(left: 14))
        // Past its validity, the 14 left are not used.
        let later = RateLimitReserves.validity + 1
        #expect(reserves.reserved("k", interval: 100, burst: 640, now: later) == 0)
        #expect(reserves.take("k", interval: 100, burst: 640, now: later) == .ask(8))
    }

    @Test func aPartialGrantReservesWhatWasGranted() {
        var reserves = RateLimitReserves()
        reserves.granted("k", interval: 100, burst: 640, granted: 3, asked: 8, now: 0)
        #expect(reserves.reserved("k", interval: 100, burst: 640, now: 1) == 2)
        // The two left are a quarter of the 8 asked for: topped up right away.
        #expect(reserves.take("k", interval: 100, burst: 640, now: 1) == .admittedToppingUp(left: 1, ask: 15))
    }

    @Test func aRefusalIsRememberedUntilItsRetryAfterThenStartsOverFromSingleTokens() {
        var reserves = RateLimitReserves()
        reserves.granted("k", interval: 100, burst: 640, granted: 1, asked: 1, now: 0)
        #expect(reserves.take("k", interval: 100, burst: 640, now: 1) == .ask(2))
        reserves.refused("k", interval: 100, burst: 640, retryAfter: 50, now: 1)
        #expect(reserves.take("k", interval: 100, burst: 640, now: 11) == .refused(retryAfter: 40))
        #expect(reserves.take("k", interval: 100, burst: 640, now: 51) == .ask(1))
        // Small bursts too (exact: nobody is admitted before the retry-after).
        reserves.refused("small", interval: 100, burst: 2, retryAfter: 100, now: 0)
        #expect(reserves.take("small", interval: 100, burst: 2, now: 99) == .refused(retryAfter: 1))
        #expect(reserves.take("small", interval: 100, burst: 2, now: 100) == .ask(1))
        // Another limit under the same key (a reload changed it) is not refused by the old one.
        reserves.refused("k", interval: 100, burst: 640, retryAfter: 1000, now: 100)
        #expect(reserves.take("k", interval: 100, burst: 1280, now: 101) == .ask(1))
    }

    @Test func lapsedReservesAreSweptWhenManyKeysAreKept() {
        var reserves = RateLimitReserves()
        for index in 0..<5000 { reserves.granted("k\(index)", interval: 100, burst: 640, granted: 2, asked: 2, now: 0) }
        #expect(reserves.count == 5000)
        reserves.granted("fresh", interval: 100, burst: 640, granted: 2, asked: 2, now: RateLimitReserves.validity + 1)
        #expect(reserves.count == 1)
    }
}

/// The rate-limit algorithm on values (microseconds).
@Suite struct RateLimitCellTests {
    @Test func aBurstThenOneRequestPerInterval() {
        var tat: Int64?
        var allowed: [Bool] = []
        for _ in 0..<3 {
            let (decision, next) = RateLimitCell.decide(tat: tat, now: 1_000, interval: 100, burst: 2)
            allowed.append(decision.allowed)
            if let next { tat = next }
        }
        #expect(allowed == [true, true, false])
        // Refused: retry after one interval, the stored time unchanged.
        let refused = RateLimitCell.decide(tat: tat, now: 1_000, interval: 100, burst: 2)
        #expect(refused.decision.retryAfter == .microseconds(100) && refused.store == nil)
        // One interval later, one more request fits, and only one.
        let later = RateLimitCell.decide(tat: tat, now: 1_100, interval: 100, burst: 2)
        #expect(later.decision.allowed && later.decision.remaining == 0)
        #expect(RateLimitCell.decide(tat: later.store, now: 1_100, interval: 100, burst: 2).decision.allowed == false)
    }

    @Test func anIdleKeyIsWholeAgain() {
        // A TAT long in the past counts as now: the full burst is available.
        let (decision, next) = RateLimitCell.decide(tat: 10, now: 1_000_000, interval: 100, burst: 5)
        #expect(decision.allowed && decision.remaining == 4 && next == 1_000_100)
    }
}
