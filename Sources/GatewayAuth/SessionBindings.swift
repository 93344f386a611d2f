import GatewayConfig
import AuthorizationServer
import Crypto
import Foundation
package import GatewayStore
import Synchronization

/// Who a client-visible session belongs to: the router it was created through and the caller who
/// created it (the token's subject; nil on `auth: none` routers).
package struct SessionOwner: Hashable, Sendable, Codable {
    package let router: String
    package let subject: String?

    package init(router: String, subject: String?) {
        self.router = router
        self.subject = subject
    }

    package init(route: some ProtectedRoute, caller: VerifiedCaller?) {
        self.init(router: route.router.name, subject: caller?.claims.sub)
    }

    /// One string per owner, for in-memory keys (parked requests, pools).
    package var key: String { "\(router)\u{0}\(subject ?? "anonymous")" }
}

/// The one place session ownership is decided. Every session id the gateway hands to a client
/// (stdio sessions it mints, HTTP upstream sessions it passes on, sessions it bridges) is bound to
/// its `SessionOwner` in the store when it is created, and every later request naming it is
/// checked against that binding. A missing binding (expired, another gateway's store, a restart
/// with the in-memory store) fails closed with the same 404 as an unknown session, so a session
/// id is never usable through another router or by another caller.
///
/// Bindings never change once written, so a positive check is remembered in memory; the store
/// record's TTL is pushed forward while the session is in use.
package final class SessionBindings: Sendable {
    /// A binding unused for this long expires (the client gets 404 and starts a new session).
    package static let ttl: Duration = .seconds(24 * 3600)
    /// How often a session in use pushes its binding's TTL forward.
    package static let refreshInterval: Duration = .seconds(3600)
    /// How long a positive check is believed without asking the store again: a session ended by
    /// an administrator (`mcp-gateway admin sessions end`) stops working within this long on every
    /// instance.
    package static let recheckInterval: Duration = .seconds(5)
    package static let maxCached = 100_000

    private struct Cached {
        package let owner: SessionOwner
        /// When the store last confirmed the binding.
        package var checked: ContinuousClock.Instant
        /// When the binding's TTL was last pushed forward.
        package var refreshed: ContinuousClock.Instant
    }

    private let store: any KeyValueStore
    private let cache = Mutex<[String: Cached]>([:])

    package init(store: any KeyValueStore) {
        self.store = store
    }

    /// Store key for a session id: hashed, so a client's string never becomes a key as it is.
    private static func key(_ sessionID: String) -> String { "session:\(hash(sessionID))" }

    /// The SHA-256 of a session id in hex: how the store, the audit log (its first 16 characters)
    /// and the admin commands name a session.
    package static func hash(_ sessionID: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in SHA256.hash(data: Data(sessionID.utf8)) {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The day's index set of bound sessions (`sessions:<yyyymmdd>`): a session is added when bound
    /// and whenever its TTL is pushed forward, so today's and yesterday's sets hold every live one.
    static func indexKey(daysAgo: Int, now: Date = Date()) -> String {
        let day = Int(now.timeIntervalSince1970) / 86400 - daysAgo
        return "sessions:\(day)"
    }

    private func index(_ key: String) async {
        let hash = String(key.dropFirst("session:".count))
        try? await store.addToSet(Self.indexKey(daysAgo: 0), [hash], ttl: .seconds(2 * 86400 + 3600))
    }

    /// Binds a new session to its owner. A session id that is already bound to someone else is
    /// refused (an upstream handing out a known id must not hand over its owner's session).
    package func bind(_ sessionID: String, to owner: SessionOwner) async throws(SessionRefusal) {
        let key = Self.key(sessionID)
        let value: [UInt8]
        do { value = Array(try JSONEncoder().encode(owner)) } catch { throw .storeUnavailable }
        do {
            if try await !store.setIfAbsent(key, value, ttl: Self.ttl) {
                guard let existing = try await store.get(key), (try? JSONDecoder().decode(SessionOwner.self, from: Data(existing))) == owner else {
                    throw SessionRefusal.notFound
                }
            }
        } catch let error as SessionRefusal {
            throw error
        } catch {
            throw .storeUnavailable
        }
        await index(key)
        remember(key, owner: owner, refreshed: true)
    }

    /// Passes when `sessionID` is bound to `owner`; 404 when it is bound to anyone else or to
    /// nobody; 503 when the store cannot say.
    package func check(_ sessionID: String, owner: SessionOwner) async throws(SessionRefusal) {
        let key = Self.key(sessionID)
        let now = ContinuousClock.now
        let cached = cache.withLock { $0[key] }
        if let cached {
            guard cached.owner == owner else { throw .notFound }
            if now - cached.checked < Self.recheckInterval { return }
        }
        let bytes: [UInt8]?
        do { bytes = try await store.get(key) } catch { throw .storeUnavailable }
        guard let bytes, let bound = try? JSONDecoder().decode(SessionOwner.self, from: Data(bytes)) else {
            cache.withLock { $0[key] = nil }
            throw .notFound
        }
        guard bound == owner else { throw .notFound }
        // In use: keep the binding alive as long as the session is (at most once an interval).
        let refresh = cached.map { now - $0.refreshed >= Self.refreshInterval } ?? true
        if refresh {
            try? await store.set(key, bytes, ttl: Self.ttl)
            await index(key)
        }
        remember(key, owner: owner, refreshed: refresh)
    }

    /// A bound session as the admin commands list it.
    package struct BoundSession: Sendable, Codable, Equatable {
        /// The SHA-256 of the id (the id itself is not stored).
        package let hash: String
        package let router: String
        package let subject: String?
        /// Seconds until the binding expires unused.
        package let expiresIn: Int
    }

    /// The sessions bound now (today's and yesterday's index), pruning index entries that expired.
    package func list() async throws(StoreError) -> [BoundSession] {
        var sessions: [BoundSession] = []
        for daysAgo in 0...1 {
            let indexKey = Self.indexKey(daysAgo: daysAgo)
            var gone: [String] = []
            for hash in try await store.setMembers(indexKey) where !sessions.contains(where: { $0.hash == hash }) {
                guard let bytes = try await store.get("session:\(hash)"), let owner = try? JSONDecoder().decode(SessionOwner.self, from: Data(bytes)) else {
                    gone.append(hash)
                    continue
                }
                let ttl = try await store.timeToLive("session:\(hash)")
                sessions.append(BoundSession(hash: hash, router: owner.router, subject: owner.subject, expiresIn: Int(ttl?.components.seconds ?? 0)))
            }
            try await store.removeFromSet(indexKey, gone)
        }
        return sessions.sorted { ($0.expiresIn, $0.hash) > ($1.expiresIn, $1.hash) }
    }

    /// Ends a session by its id or its hash (as `list` shows it): every instance refuses it within
    /// `recheckInterval`. False when no such session is bound.
    package func end(idOrHash: String) async throws(StoreError) -> Bool {
        let isHash = idOrHash.count == 64 && idOrHash.allSatisfy { $0.isHexDigit && !$0.isUppercase }
        var keys = ["session:\(Self.hash(idOrHash))"]
        if isHash { keys.append("session:\(idOrHash)") }
        for key in keys {
            cache.withLock { $0[key] = nil }
        }
        return try await store.delete(keys) > 0
    }

    /// The session ended (DELETE): its id binds nobody any more.
    package func unbind(_ sessionID: String) async {
        let key = Self.key(sessionID)
        cache.withLock { $0[key] = nil }
        _ = try? await store.delete([key])
    }

    private func remember(_ key: String, owner: SessionOwner, refreshed: Bool) {
        let now = ContinuousClock.now
        cache.withLock { cache in
            if cache.count >= Self.maxCached { cache.removeAll(keepingCapacity: true) }
            let lastRefresh = refreshed ? now : (cache[key]?.refreshed ?? now)
            cache[key] = Cached(owner: owner, checked: now, refreshed: lastRefresh)
        }
    }
}

/// Why a session id is refused: it is not the caller's (or not known at all), or the store that
/// knows cannot answer (fails closed).
package enum SessionRefusal: Error {
    case notFound
    case storeUnavailable
}
