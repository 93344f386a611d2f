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
    package static let maxCached = 100_000

    private struct Cached {
        package let owner: SessionOwner
        package var refreshed: ContinuousClock.Instant
    }

    private let store: any KeyValueStore
    private let cache = Mutex<[String: Cached]>([:])

    package init(store: any KeyValueStore) {
        self.store = store
    }

    /// Store key for a session id: hashed, so a client's string never becomes a key as it is.
    private static func key(_ sessionID: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = Array("session:".utf8)
        for byte in SHA256.hash(data: Data(sessionID.utf8)) {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
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
        remember(key, owner: owner)
    }

    /// Passes when `sessionID` is bound to `owner`; 404 when it is bound to anyone else or to
    /// nobody; 503 when the store cannot say.
    package func check(_ sessionID: String, owner: SessionOwner) async throws(SessionRefusal) {
        let key = Self.key(sessionID)
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[key] }) {
            guard cached.owner == owner else { throw .notFound }
            if now - cached.refreshed < Self.refreshInterval { return }
        }
        let bytes: [UInt8]?
        do { bytes = try await store.get(key) } catch { throw .storeUnavailable }
        guard let bytes, let bound = try? JSONDecoder().decode(SessionOwner.self, from: Data(bytes)) else {
            cache.withLock { $0[key] = nil }
            throw .notFound
        }
        guard bound == owner else { throw .notFound }
        // In use: keep the binding alive as long as the session is.
        try? await store.set(key, bytes, ttl: Self.ttl)
        remember(key, owner: owner)
    }

    /// The session ended (DELETE): its id binds nobody any more.
    package func unbind(_ sessionID: String) async {
        let key = Self.key(sessionID)
        cache.withLock { $0[key] = nil }
        _ = try? await store.delete([key])
    }

    private func remember(_ key: String, owner: SessionOwner) {
        cache.withLock { cache in
            if cache.count >= Self.maxCached { cache.removeAll(keepingCapacity: true) }
            cache[key] = Cached(owner: owner, refreshed: .now)
        }
    }
}

/// Why a session id is refused: it is not the caller's (or not known at all), or the store that
/// knows cannot answer (fails closed).
package enum SessionRefusal: Error {
    case notFound
    case storeUnavailable
}
