import Synchronization

/// An in-process ``KeyValueStore`` for tests and single-instance development. Expiry follows an
/// injectable clock so tests can move time.
public final class MemoryStore: KeyValueStore {
    private struct Entry {
        var value: [UInt8]
        var set: Set<String>?
        var expires: ContinuousClock.Instant?
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let now: @Sendable () -> ContinuousClock.Instant

    private let origin: ContinuousClock.Instant

    public init(now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.now = now
        self.origin = now()
    }

    private func live(_ entries: inout [String: Entry], _ key: String) -> Entry? {
        guard let entry = entries[key] else { return nil }
        if let expires = entry.expires, expires <= now() {
            entries[key] = nil
            return nil
        }
        return entry
    }

    private func deadline(_ ttl: Duration?) -> ContinuousClock.Instant? {
        ttl.map { now() + $0 }
    }

    public func get(_ key: String) async throws(StoreError) -> [UInt8]? {
        entries.withLock { live(&$0, key)?.value }
    }

    public func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) {
        let expires = deadline(ttl)
        entries.withLock { $0[key] = Entry(value: value, expires: expires) }
    }

    public func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool {
        let expires = deadline(ttl)
        return entries.withLock { entries in
            guard live(&entries, key) == nil else { return false }
            entries[key] = Entry(value: value, expires: expires)
            return true
        }
    }

    public func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool {
        entries.withLock { entries in
            guard let entry = live(&entries, key), entry.value == expected else { return false }
            entries[key] = Entry(value: value, expires: entry.expires)
            return true
        }
    }

    public func take(_ key: String) async throws(StoreError) -> [UInt8]? {
        entries.withLock { entries in
            let value = live(&entries, key)?.value
            entries[key] = nil
            return value
        }
    }

    public func delete(_ keys: [String]) async throws(StoreError) -> Int {
        entries.withLock { entries in
            keys.reduce(0) { count, key in
                let existed = live(&entries, key) != nil
                entries[key] = nil
                return count + (existed ? 1 : 0)
            }
        }
    }

    public func increment(_ key: String, window: Duration) async throws(StoreError) -> Int {
        let expires = deadline(window)
        return entries.withLock { entries in
            var entry = live(&entries, key) ?? Entry(value: Array("0".utf8), expires: expires)
            let next = (Int(String(decoding: entry.value, as: UTF8.self)) ?? 0) + 1
            entry.value = Array(String(next).utf8)
            entries[key] = entry
            return next
        }
    }

    public func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision {
        decide(key, interval: interval, burst: burst)
    }

    private func decide(_ key: String, interval: Duration, burst: Int) -> RateLimitDecision {
        let current = now()
        // Microseconds since a fixed origin of this store's clock: only differences matter.
        let nowMicros = (current - origin).wholeMicroseconds
        return entries.withLock { entries in
            let stored = live(&entries, key).flatMap { Int64(String(decoding: $0.value, as: UTF8.self)) }
            let (decision, next) = RateLimitCell.decide(tat: stored, now: nowMicros, interval: interval.wholeMicroseconds, burst: burst)
            if let next {
                entries[key] = Entry(value: Array(String(next).utf8), expires: current + .microseconds(next - nowMicros))
            }
            return decision
        }
    }

    public func timeToLive(_ key: String) async throws(StoreError) -> Duration? {
        let current = now()
        return entries.withLock { entries in live(&entries, key)?.expires.map { $0 - current } }
    }

    public func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError) {
        let expires = deadline(ttl)
        entries.withLock { entries in
            var entry = live(&entries, key) ?? Entry(value: [], set: [], expires: nil)
            entry.set = (entry.set ?? []).union(members)
            entry.expires = expires
            entries[key] = entry
        }
    }

    public func setMembers(_ key: String) async throws(StoreError) -> [String] {
        entries.withLock { entries in (live(&entries, key)?.set).map { Array($0).sorted() } ?? [] }
    }

    public func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError) {
        entries.withLock { entries in
            guard var entry = live(&entries, key) else { return }
            entry.set = (entry.set ?? []).subtracting(members)
            if entry.set?.isEmpty ?? true { entries[key] = nil } else { entries[key] = entry }
        }
    }

    public func ping() async throws(StoreError) {}
}

extension MemoryStore: CallbackRateLimiting {
    /// Always decided at once, on the caller's thread.
    public func rateLimitNow(_ key: String, interval: Duration, burst: Int) -> RateLimitAttempt {
        .decided(decide(key, interval: interval, burst: burst))
    }

    /// Never needed (nothing is asked); decides the ask's key as a request of its own.
    public func rateLimit(asking: RateLimitAsk, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void) {
        completion(.success(decide(asking.key, interval: .milliseconds(asking.interval), burst: asking.burst)))
    }
}
