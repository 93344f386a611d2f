/// Why a store operation failed. Endpoints answer `unavailable` with 503; the caller never
/// mistakes "store down" for "record missing".
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The store cannot be reached now (connecting, reconnecting, timed out).
    case unavailable(String)
    /// The store answered with an error (a bug or a misconfigured server).
    case rejected(String)

    public var description: String {
        switch self {
        case .unavailable(let detail): "store unavailable: \(detail)"
        case .rejected(let detail): "store rejected the command: \(detail)"
        }
    }
}

/// The state the gateway keeps: opaque byte values under string keys, with expiry. Every key that
/// is not meant to live forever gets a TTL; single-use records are consumed with ``take(_:)``,
/// which is atomic, so a concurrent double-spend cannot succeed.
///
/// Implementations apply their own key prefix; callers pass unprefixed keys.
public protocol KeyValueStore: Sendable {
    func get(_ key: String) async throws(StoreError) -> [UInt8]?
    /// Stores `value`; `ttl` nil means no expiry.
    func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError)
    /// Stores `value` only if `key` does not exist; returns whether it was stored.
    func setIfAbsent(_ key: String, _ value: [UInt8], ttl: Duration?) async throws(StoreError) -> Bool
    /// Replaces the value of `key` with `value` only while it is still `expected`, keeping its
    /// time to live, in one atomic step; returns whether it was replaced (compare-and-set).
    func replaceIfEqual(_ key: String, expected: [UInt8], with value: [UInt8]) async throws(StoreError) -> Bool
    /// Returns the value and deletes the key in one atomic step (nil if absent or expired).
    func take(_ key: String) async throws(StoreError) -> [UInt8]?
    /// Deletes keys; returns how many existed.
    @discardableResult
    func delete(_ keys: [String]) async throws(StoreError) -> Int
    /// Increments a counter; the first increment starts its `window` (fixed-window rate limits).
    func increment(_ key: String, window: Duration) async throws(StoreError) -> Int
    /// Counts one request against the rate limit `key` (see ``RateLimitCell``: `burst` requests
    /// at once, then one per `interval`), atomically, in one round trip.
    func rateLimit(_ key: String, interval: Duration, burst: Int) async throws(StoreError) -> RateLimitDecision
    /// Remaining time to live; nil when the key is absent or has no expiry.
    func timeToLive(_ key: String) async throws(StoreError) -> Duration?
    /// Adds members to a set (e.g. the tokens of a client, for revocation); refreshes its TTL.
    func addToSet(_ key: String, _ members: [String], ttl: Duration?) async throws(StoreError)
    func setMembers(_ key: String) async throws(StoreError) -> [String]
    /// Removes members from a set (an index pruned of entries that are gone).
    func removeFromSet(_ key: String, _ members: [String]) async throws(StoreError)
    /// Checks the store answers.
    func ping() async throws(StoreError)
}

/// A store that counts a rate limit without a task (the fast relay decides on its event loop):
/// `completion` gets what `rateLimit(_:interval:burst:)` would return, on the calling thread or
/// another one (the caller hops where it needs to be).
public protocol CallbackRateLimiting: Sendable {
    func rateLimit(_ key: String, interval: Duration, burst: Int, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void)
}

extension Duration {
    /// Whole milliseconds (for Redis PX / PEXPIRE).
    public var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

extension KeyValueStore {
    public func set(_ key: String, _ value: String, ttl: Duration?) async throws(StoreError) {
        try await set(key, Array(value.utf8), ttl: ttl)
    }

    public func getString(_ key: String) async throws(StoreError) -> String? {
        try await get(key).map { String(decoding: $0, as: UTF8.self) }
    }
}
