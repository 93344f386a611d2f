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

/// A session as the store records it: who owns it (router and subject, as `SessionOwner`), and
/// what another instance needs to serve it (`instance`, `initialize`), so that any instance
/// sharing the store can check ownership, forward a request to the instance holding the session,
/// or take the session over when that instance is gone. Records written before these fields
/// existed decode with them nil.
package struct SessionRecord: Codable, Sendable, Equatable {
    package var router: String
    package var subject: String?
    /// The service the router sends to.
    package var service: String?
    /// `stdio` (a child process), `http` (an upstream's own session), `group`, or `bridged` (a
    /// session-based client of a 2026-07-28-only server).
    package var kind: String?
    /// The instance holding the session's state; nil once released by a stopping instance.
    package var instance: String?
    /// The client's `initialize` request as it sent it: replayed to a new child on takeover.
    package var initialize: String?
    package var protocolVersion: String?
    /// Unix time the session started.
    package var created: Int?

    package var owner: SessionOwner { SessionOwner(router: router, subject: subject) }

    package init(owner: SessionOwner, details: SessionDetails?, instance: String?) {
        router = owner.router
        subject = owner.subject
        service = details?.service
        kind = details?.kind
        initialize = details?.initialize
        protocolVersion = details?.protocolVersion
        self.instance = instance
        created = Int(Date().timeIntervalSince1970)
    }
}

/// What a new session's record says besides its owner.
package struct SessionDetails: Sendable {
    package var service: String
    package var kind: String
    package var initialize: String?
    package var protocolVersion: String?

    package init(service: String, kind: String, initialize: String? = nil, protocolVersion: String? = nil) {
        self.service = service
        self.kind = kind
        self.initialize = initialize
        self.protocolVersion = protocolVersion
    }
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

    /// Immutable (a newer confirmation replaces the entry), and a class: reading an entry from
    /// the shared cache is one retain, where a copy of the record retained each of its strings.
    private final class Cached: Sendable {
        /// The session's store key (the id's hash), so that ending a session by its hash finds it.
        let storeKey: String
        let record: SessionRecord
        var owner: SessionOwner { record.owner }
        /// When the store last confirmed the binding.
        let checked: ContinuousClock.Instant
        /// When the binding's TTL was last pushed forward.
        let refreshed: ContinuousClock.Instant

        init(storeKey: String, record: SessionRecord, checked: ContinuousClock.Instant, refreshed: ContinuousClock.Instant) {
            self.storeKey = storeKey
            self.record = record
            self.checked = checked
            self.refreshed = refreshed
        }
    }

    private let store: any KeyValueStore
    /// By the session id as the client sends it: a request in a session whose binding was
    /// confirmed a moment ago is admitted without hashing its id again.
    private let cache = Mutex<[String: Cached]>([:])
    /// This process's instance id (`ClusterMembership`), written into the records of the sessions
    /// it holds.
    package let instanceID: String

    package init(store: any KeyValueStore, instanceID: String = "local") {
        self.store = store
        self.instanceID = instanceID
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
    package func bind(_ sessionID: String, to owner: SessionOwner, details: SessionDetails? = nil) async throws(SessionRefusal) {
        let key = Self.key(sessionID)
        var record = SessionRecord(owner: owner, details: details, instance: instanceID)
        let value: [UInt8]
        do { value = Array(try JSONEncoder().encode(record)) } catch { throw .storeUnavailable }
        do {
            if try await !store.setIfAbsent(key, value, ttl: Self.ttl) {
                guard let existing = try await store.get(key), let bound = try? JSONDecoder().decode(SessionRecord.self, from: Data(existing)), bound.owner == owner else {
                    throw SessionRefusal.notFound
                }
                record = bound
            }
        } catch let error as SessionRefusal {
            throw error
        } catch {
            throw .storeUnavailable
        }
        await index(key)
        remember(sessionID, key: key, record: record, refreshed: true)
    }

    /// The session's record as the store has it now (not the cached one): where it is held.
    package func currentRecord(_ sessionID: String) async throws(SessionRefusal) -> SessionRecord? {
        let bytes: [UInt8]?
        do { bytes = try await store.get(Self.key(sessionID)) } catch { throw .storeUnavailable }
        return bytes.flatMap { try? JSONDecoder().decode(SessionRecord.self, from: Data($0)) }
    }

    /// Records that `instance` holds the session now (this one took it over), or that nobody
    /// does (`instance` nil: released by a stopping instance), but only while the record names one
    /// of `from`: a compare-and-set, so that a release never undoes another instance's takeover
    /// and two takeovers do not both win. True when the record was changed.
    @discardableResult
    package func move(_ sessionID: String, from: Set<String?>, to instance: String?) async throws(SessionRefusal) -> Bool {
        let key = Self.key(sessionID)
        for _ in 0..<4 {
            let bytes: [UInt8]?
            do { bytes = try await store.get(key) } catch { throw .storeUnavailable }
            guard let bytes, var record = try? JSONDecoder().decode(SessionRecord.self, from: Data(bytes)), from.contains(record.instance) else { return false }
            record.instance = instance
            do {
                let changed = Array(try JSONEncoder().encode(record))
                if try await store.replaceIfEqual(key, expected: bytes, with: changed) {
                    remember(sessionID, key: key, record: record, refreshed: false)
                    return true
                }
            } catch {
                throw .storeUnavailable
            }
            // Changed meanwhile (a heartbeat of use, another instance): read again.
        }
        return false
    }

    /// A short lock for taking a session over, so that two instances (or two requests) do not
    /// both start a child for it. True when this caller holds it.
    package func lockTakeover(_ sessionID: String, for duration: Duration) async throws(SessionRefusal) -> Bool {
        do { return try await store.setIfAbsent("session-takeover:\(Self.hash(sessionID))", Array(instanceID.utf8), ttl: duration) } catch { throw .storeUnavailable }
    }

    package func unlockTakeover(_ sessionID: String) async {
        _ = try? await store.delete(["session-takeover:\(Self.hash(sessionID))"])
    }

    /// `check` without waiting: true when the store confirmed, within `recheckInterval`, that
    /// the owner `router` and `subject` hold the session; false when only the store can say
    /// (`check` asks it). Compared where the binding is kept: the fast relay asks on every request
    /// of a stdio session, from every event loop, and a copy of the record retained each of its
    /// strings (shared by both cores) only to be dropped.
    /// `kind`: when given, the record must say the session is of that kind (an upstream's own
    /// `http` session, not one the gateway bridged).
    package func isRecentlyChecked(_ sessionID: String, router: String, subject: String?, kind: String? = nil) -> Bool {
        let now = ContinuousClock.now
        return cache.withLock { cache in
            guard let cached = cache[sessionID] else { return false }
            if let kind, cached.record.kind != kind { return false }
            return cached.record.router == router && cached.record.subject == subject && now - cached.checked < Self.recheckInterval
        }
    }

    /// Passes when `sessionID` is bound to `owner`; 404 when it is bound to anyone else or to
    /// nobody; 503 when the store cannot say.
    @discardableResult
    package func check(_ sessionID: String, owner: SessionOwner) async throws(SessionRefusal) -> SessionRecord {
        let now = ContinuousClock.now
        let cached = cache.withLock { $0[sessionID] }
        if let cached {
            guard cached.owner == owner else { throw .notFound }
            if now - cached.checked < Self.recheckInterval { return cached.record }
        }
        let key = cached?.storeKey ?? Self.key(sessionID)
        let bytes: [UInt8]?
        do { bytes = try await store.get(key) } catch { throw .storeUnavailable }
        guard let bytes, let bound = try? JSONDecoder().decode(SessionRecord.self, from: Data(bytes)) else {
            cache.withLock { $0[sessionID] = nil }
            throw .notFound
        }
        guard bound.owner == owner else { throw .notFound }
        // In use: keep the binding alive as long as the session is (at most once an interval).
        let refresh = cached.map { now - $0.refreshed >= Self.refreshInterval } ?? true
        if refresh {
            try? await store.set(key, bytes, ttl: Self.ttl)
            await index(key)
        }
        remember(sessionID, key: key, record: bound, refreshed: refresh)
        return bound
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
                guard let bytes = try await store.get("session:\(hash)"), let owner = try? JSONDecoder().decode(SessionRecord.self, from: Data(bytes)) else {
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
        cache.withLock { cache in
            cache[idOrHash] = nil
            for (id, cached) in cache where keys.contains(cached.storeKey) { cache[id] = nil }
        }
        return try await store.delete(keys) > 0
    }

    /// The session ended (DELETE): its id binds nobody any more.
    package func unbind(_ sessionID: String) async {
        let key = Self.key(sessionID)
        cache.withLock { $0[sessionID] = nil }
        _ = try? await store.delete([key])
    }

    private func remember(_ sessionID: String, key: String, record: SessionRecord, refreshed: Bool) {
        let now = ContinuousClock.now
        cache.withLock { cache in
            if cache.count >= Self.maxCached { cache.removeAll(keepingCapacity: true) }
            let lastRefresh = refreshed ? now : (cache[sessionID]?.refreshed ?? now)
            cache[sessionID] = Cached(storeKey: key, record: record, checked: now, refreshed: lastRefresh)
        }
    }
}

/// Why a session id is refused: it is not the caller's (or not known at all), or the store that
/// knows cannot answer (fails closed).
package enum SessionRefusal: Error {
    case notFound
    case storeUnavailable
}
