/// The answer of a rate limit for one request.
public struct RateLimitDecision: Sendable, Equatable {
    public var allowed: Bool
    /// Requests that could still be made at once after this one.
    public var remaining: Int
    /// When a refused request could be made (zero when allowed).
    public var retryAfter: Duration
    /// When the allowance is whole again.
    public var resetAfter: Duration

    public init(allowed: Bool, remaining: Int, retryAfter: Duration, resetAfter: Duration) {
        self.allowed = allowed
        self.remaining = remaining
        self.retryAfter = retryAfter
        self.resetAfter = resetAfter
    }
}

/// The generic cell rate algorithm on one stored value, the theoretical arrival time (TAT, in
/// microseconds: a limit of more than 1000 requests a second has an interval under a
/// millisecond, which milliseconds would round up, capping it at 1000): each request moves it
/// `interval` later; a request is allowed while the TAT stays
/// within `burst` intervals of now. One number per key, one atomic step per request: the memory
/// store runs this function, the Redis store the same steps in a Lua script (`RedisStore`).
public enum RateLimitCell {
    /// The decision for a request at `now` against the stored `tat` (nil: never seen or expired),
    /// and the TAT to store when it is allowed (with its time to live, `newTAT - now`).
    public static func decide(tat stored: Int64?, now: Int64, interval: Int64, burst: Int) -> (decision: RateLimitDecision, store: Int64?) {
        let interval = max(1, interval)
        let tat = max(stored ?? now, now)
        let next = tat + interval
        let allowAt = next - Int64(burst) * interval
        if now < allowAt {
            return (RateLimitDecision(allowed: false, remaining: 0, retryAfter: .microseconds(allowAt - now), resetAfter: .microseconds(tat - now)), nil)
        }
        return (RateLimitDecision(allowed: true, remaining: Int((now - allowAt) / interval), retryAfter: .zero, resetAfter: .microseconds(next - now)), next)
    }
}
