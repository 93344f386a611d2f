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

/// A store that counts a rate limit without a task (the fast relay decides on its event loop).
/// A request is decided in two steps, so that the common case costs no callback: what the
/// instance knows at once (`rateLimitNow`), else one ask of the store (`rateLimit(asking:)`).
public protocol CallbackRateLimiting: Sendable {
    /// The decision when it needs no store round trip (a reserved token, a refusal remembered
    /// until its retry-after; the memory store always decides so); otherwise the ask to make.
    /// Counts the request either way: an `.ask` must be asked.
    func rateLimitNow(_ key: String, interval: Duration, burst: Int) -> RateLimitAttempt
    /// The store's answer to an ask `rateLimitNow` returned: `completion` gets what
    /// `rateLimit(_:interval:burst:)` would return, on the calling thread or another one (the
    /// caller hops where it needs to be).
    func rateLimit(asking: RateLimitAsk, completion: @escaping @Sendable (Result<RateLimitDecision, StoreError>) -> Void)
}

/// What `CallbackRateLimiting.rateLimitNow` found.
public enum RateLimitAttempt: Sendable {
    case decided(RateLimitDecision)
    case ask(RateLimitAsk)
}

/// A rate limit's round trip to the store: the key, the limit (milliseconds per token, burst),
/// how many tokens to ask for (the request's own and a reserve's) and when it was decided to ask
/// (the store's monotonic milliseconds).
public struct RateLimitAsk: Sendable {
    public let key: String
    public let interval: Int64
    public let burst: Int
    public let wanted: Int
    public let now: Int64
    /// The store's own note of where the ask was taken (e.g. which reserve table), for the reply.
    public let origin: Int
    /// A reserve's top-up: no request waits for it, every token granted is reserved.
    public let topUp: Bool

    public init(key: String, interval: Int64, burst: Int, wanted: Int, now: Int64, origin: Int = 0, topUp: Bool = false) {
        self.key = key
        self.interval = interval
        self.burst = burst
        self.wanted = wanted
        self.now = now
        self.origin = origin
        self.topUp = topUp
    }
}

extension Duration {
    /// Whole milliseconds (for Redis PX / PEXPIRE).
    public var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds (a request's duration in the audit line and the metrics).
    public var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// Whole microseconds (a rate limit's interval and times, see `RateLimitCell`).
    public var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
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
