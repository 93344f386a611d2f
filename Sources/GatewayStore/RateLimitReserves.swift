/// Allowance one gateway instance took from a shared rate limit ahead of use, so that a key
/// requested at a high rate does not cost a store round trip per request.
///
/// The store grants a request for `n` tokens atomically (the GCRA's arrival time moves `n`
/// intervals at once, never past the burst); the instance then admits the next `n - 1` requests
/// of that key from its reserve. A reserve is used within `validity` or dropped. Its size adapts:
/// it doubles while reserves are used up in time (a hot key) and halves when one lapses unused,
/// and never exceeds `limit(burst:)`: a sixteenth of the burst, at most `maxSize`. Limits with a
/// burst under 32 therefore never reserve: every request asks the store, exactly as without.
///
/// A reserve running low (a quarter of its size left, within its validity) is topped up ahead of
/// need: the request that finds it so is admitted from it and the owner asks the store for the
/// tokens that bring the reserve to its next size, without anyone waiting for the answer. A hot
/// key's requests therefore never wait for the store; before, every one that came while the
/// reserve's own ask was out asked the store for itself.
///
/// What it costs in exactness, per instance and key: the store counted reserved tokens when it
/// granted them, so no more than the limit's average is ever admitted over time; an instance can
/// admit its unused reserve on top of a burst the store admits elsewhere (at most
/// `limit(burst:)` requests, 1/16 of the burst), and tokens of a reserve that lapses are not
/// admitted by anyone (the limit is then briefly stricter than configured).
///
/// A refusal is remembered until its retry-after: nobody can be admitted before then (other
/// instances only move the arrival time later), so a caller hammering a limit it is over costs no
/// round trip either. Exact, whatever the burst.
///
/// A value: events return what to do; the owner (the Redis store) keeps it under a lock and talks
/// to the store.
public struct RateLimitReserves: Sendable {
    /// How long a reserve stays usable, in milliseconds.
    public static let validity: Int64 = 1000
    /// The largest reserve, whatever the burst.
    public static let maxSize = 256
    /// Reserves kept before lapsed ones are swept.
    static let sweepAbove = 4096

    /// The largest reserve of a limit with `burst`: 1 (no reserve) under a burst of 32.
    public static func limit(burst: Int) -> Int {
        max(1, min(burst / 16, maxSize))
    }

    struct Reserve: Sendable {
        /// Tokens left to admit requests with.
        var tokens: Int
        /// When they lapse (milliseconds, the owner's monotonic clock).
        var lapses: Int64
        /// How many tokens the last grant asked for.
        var size: Int
        /// Until when requests are refused without asking (0: not refused).
        var refusedUntil: Int64 = 0
        /// A reserve's ask is out until then (0: none; given up after `validity`, when the store
        /// never answered): requests meanwhile ask for themselves alone, so concurrent asks never
        /// reserve more than the limit between them.
        var askingUntil: Int64 = 0
        /// How many tokens a request's ask out asked for (`pendingTarget` is a top-up's).
        var pendingSize = 0
        /// The size the reserve will have when the top-up out is granted (0: the ask out, if
        /// any, is a request's).
        var pendingTarget = 0
    }

    /// A limit's key with its parameters: a reload that changes the limit starts afresh.
    struct Limit: Hashable, Sendable {
        let key: String
        let interval: Int64
        let burst: Int
    }

    private var reserves: [Limit: Reserve] = [:]

    public init() {}

    public enum Take: Sendable, Equatable {
        /// A reserved token admits the request: no store round trip; `left` remain.
        case admitted(left: Int)
        /// As `admitted`, and the reserve runs low: ask the store for this many more tokens now,
        /// with nobody waiting for the answer (`granted(…, topUp: true)`).
        case admittedToppingUp(left: Int, ask: Int)
        /// Ask the store for this many tokens (the request's own and the reserve's).
        case ask(Int)
        /// The store refused a request of this key, and would until `retryAfter` milliseconds.
        case refused(retryAfter: Int64)
    }

    /// A request of `key` (`interval` milliseconds, `burst`) at `now`.
    public mutating func take(_ key: String, interval: Int64, burst: Int, now: Int64) -> Take {
        let limit = Self.limit(burst: burst)
        // Found once and changed in place: the key is hashed once per request.
        guard let index = reserves.index(forKey: Limit(key: key, interval: interval, burst: burst)) else { return .ask(1) }
        let reserve = reserves.values[index]
        if now < reserve.refusedUntil { return .refused(retryAfter: reserve.refusedUntil - now) }
        guard limit > 1 else {
            reserves.remove(at: index)
            return .ask(1)
        }
        if now < reserve.lapses, reserve.tokens > 0 {
            let left = reserve.tokens - 1
            reserves.values[index].tokens = left
            // Low within its validity: a hot key. Topped up to twice its size (at most the limit)
            // while requests keep being admitted from what is left.
            if left <= reserve.size / 4, now >= reserve.askingUntil {
                let target = min(limit, reserve.size * 2)
                if target > left {
                    reserves.values[index].askingUntil = now + Self.validity
                    reserves.values[index].pendingTarget = target
                    return .admittedToppingUp(left: left, ask: target - left)
                }
            }
            return .admitted(left: left)
        }
        if now < reserve.askingUntil { return .ask(1) }
        // Used up in time: the key is hot, reserve more. Lapsed unused: reserve less.
        let usedUp = now < reserve.lapses
        let size = usedUp ? min(limit, reserve.size * 2) : max(1, reserve.size / 2)
        reserves.values[index].askingUntil = now + Self.validity
        reserves.values[index].pendingSize = size
        reserves.values[index].pendingTarget = 0
        return .ask(size)
    }

    /// The store granted `granted` of the `asked` tokens at `now`: one admits the request that
    /// asked, the rest are reserved; all of them for a top-up (`topUp`, nobody asked for itself).
    public mutating func granted(_ key: String, interval: Int64, burst: Int, granted: Int, asked: Int, now: Int64, topUp: Bool = false) {
        let id = Limit(key: key, interval: interval, burst: burst)
        let limit = Self.limit(burst: burst)
        guard limit > 1 else {
            reserves[id] = nil
            return
        }
        let own = topUp ? 0 : 1
        guard var reserve = reserves[id] else {
            return keep(id, Reserve(tokens: max(0, granted - own), lapses: now + Self.validity, size: max(1, asked)), now: now)
        }
        let left = now < reserve.lapses ? reserve.tokens : 0
        if topUp {
            // Never more than the limit, however the asks crossed (tokens over it are not used).
            let tokens = min(limit, left + granted)
            reserve = Reserve(tokens: tokens, lapses: now + Self.validity, size: max(1, reserve.pendingTarget > 0 ? reserve.pendingTarget : tokens))
        } else if now < reserve.askingUntil, reserve.pendingTarget == 0, asked == reserve.pendingSize {
            // The reserve's own ask.
            reserve = Reserve(tokens: left + max(0, granted - 1), lapses: now + Self.validity, size: max(1, asked))
        } else {
            // A request that asked for itself while the reserve's ask was out.
            reserve.tokens = left + max(0, granted - 1)
        }
        reserves[id] = reserve
    }

    /// The store refused the request at `now`, until `retryAfter` milliseconds from then: until
    /// that time requests are refused here, and then start again from single tokens. A refused
    /// top-up (`topUp`) leaves the tokens left to be used, and none is asked for until then.
    public mutating func refused(_ key: String, interval: Int64, burst: Int, retryAfter: Int64, now: Int64, topUp: Bool = false) {
        if topUp {
            guard let index = reserves.index(forKey: Limit(key: key, interval: interval, burst: burst)) else { return }
            reserves.values[index].askingUntil = now + max(0, retryAfter)
            reserves.values[index].pendingTarget = 0
            return
        }
        keep(Limit(key: key, interval: interval, burst: burst), Reserve(tokens: 0, lapses: now, size: 1, refusedUntil: now + max(0, retryAfter)), now: now)
    }

    private mutating func keep(_ id: Limit, _ reserve: Reserve, now: Int64) {
        if reserves[id] == nil, reserves.count >= Self.sweepAbove {
            reserves = reserves.filter { now < $0.value.lapses || now < $0.value.refusedUntil || now < $0.value.askingUntil }
        }
        reserves[id] = reserve
    }

    /// Tokens reserved for `key` now (tests, diagnostics).
    public func reserved(_ key: String, interval: Int64, burst: Int, now: Int64) -> Int {
        reserves[Limit(key: key, interval: interval, burst: burst)].map { now < $0.lapses ? $0.tokens : 0 } ?? 0
    }

    /// Keys with a reserve entry, lapsed or not.
    public var count: Int { reserves.count }
}
