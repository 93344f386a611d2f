public import Foundation
public import GatewayConfig
public import GatewayStore
import AuthorizationServer
import Synchronization

/// What the gateway holds for one user's connection to one upstream: the upstream's tokens and
/// where to refresh and revoke them. Stored sealed (`SecretSealer`); never logged.
public struct UpstreamGrant: Codable, Sendable, Equatable {
    public var accessToken: String
    public var refreshToken: String?
    public var expiresAt: Date?
    public var scope: String?
    /// The upstream's authorization server (nil for `provider: github`).
    public var issuer: String?
    public var tokenEndpoint: String?
    public var revocationEndpoint: String?
    /// The client the gateway was at that authorization server.
    public var clientID: String?
    public var resource: String?
    /// The user's login at the gateway, for pages.
    public var login: String?
    public var connectedAt: Date
    public var refreshedAt: Date?

    public init(accessToken: String, refreshToken: String? = nil, expiresAt: Date? = nil, scope: String? = nil, connectedAt: Date = Date()) {
        self.accessToken = accessToken
        self.refreshToken = refreshToken
        self.expiresAt = expiresAt
        self.scope = scope
        self.connectedAt = connectedAt
    }

    /// Time to refresh: within a quarter of the token's life (at most a minute) of expiring.
    public func wantsRefresh(now: Date = Date()) -> Bool {
        guard let expiresAt, refreshToken != nil else { return false }
        let lifetime = expiresAt.timeIntervalSince(refreshedAt ?? connectedAt)
        return expiresAt.timeIntervalSince(now) < min(60, max(1, lifetime / 4))
    }
}

/// Users' upstream connections in the store, one sealed record per (user, service):
/// `upstream-grant:<service>:<sha256(subject)>`, listed in the set `upstream-grants` (for counts
/// and key rotation). Refreshes are single flight per connection, across instances too (a store
/// lock; the others wait for the winner's record).
public final class ConnectionVault: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        /// No `store.encryptionKey`, or a record the keys cannot open.
        case sealing(String)
        case store(String)
    }

    let store: any KeyValueStore
    let keys: @Sendable () -> StoreKeys?
    private let refreshes = Mutex<[String: Task<UpstreamGrant?, Never>]>([:])
    /// Grants read recently, for the request path (`grant(subject:service:maxAge:)`): a store
    /// round trip and an AES open per proxied request would cost as much as the proxying.
    private let recent = Mutex<[String: (grant: UpstreamGrant, read: ContinuousClock.Instant)]>([:])
    static let recentLimit = 10_000
    public static let indexKey = "upstream-grants"

    public init(store: any KeyValueStore, keys: @escaping @Sendable () -> StoreKeys?) {
        self.store = store
        self.keys = keys
    }

    public static func subjectHash(_ subject: String) -> String { ClientRegistry.hash("upstream-subject:" + subject) }

    static func recordKey(service: String, subjectHash: String) -> String { "upstream-grant:\(service):\(subjectHash)" }

    /// The additional data a record is sealed with: where it lives.
    static func context(service: String, subjectHash: String) -> String { "upstream-grant|\(service)|\(subjectHash)" }

    private func sealer() throws(Failure) -> SecretSealer {
        guard let keys = keys() else { throw .sealing("store.encryptionKey is not set") }
        return SecretSealer(keys: keys)
    }

    /// The user's grant; with `maxAge`, one this process read or wrote that recently will do (a
    /// change made on another instance shows within that time; one made here, at once).
    public func grant(subject: String, service: String, maxAge: Duration = .zero) async throws(Failure) -> UpstreamGrant? {
        let hash = Self.subjectHash(subject)
        let key = "\(service):\(hash)"
        if maxAge > .zero, let (grant, read) = recent.withLock({ $0[key] }), ContinuousClock.now - read < maxAge { return grant }
        let grant = try await grant(service: service, subjectHash: hash)
        remember(grant, key: key)
        return grant
    }

    private func remember(_ grant: UpstreamGrant?, key: String) {
        recent.withLock { recent in
            guard let grant else {
                recent[key] = nil
                return
            }
            if recent.count >= Self.recentLimit { recent.removeAll(keepingCapacity: true) }
            recent[key] = (grant, ContinuousClock.now)
        }
    }

    func grant(service: String, subjectHash: String) async throws(Failure) -> UpstreamGrant? {
        let raw: [UInt8]?
        do { raw = try await store.get(Self.recordKey(service: service, subjectHash: subjectHash)) } catch { throw .store(error.description) }
        guard let raw else { return nil }
        let plain: [UInt8]
        do { plain = try sealer().open(String(decoding: raw, as: UTF8.self), context: Self.context(service: service, subjectHash: subjectHash)) } catch let failure as Failure {
            throw failure
        } catch {
            throw .sealing("\(error)")
        }
        guard let grant = try? JSONDecoder.vault.decode(UpstreamGrant.self, from: Data(plain)) else { throw .sealing("the record is not a connection") }
        return grant
    }

    public func save(_ grant: UpstreamGrant, subject: String, service: String) async throws(Failure) {
        try await save(grant, service: service, subjectHash: Self.subjectHash(subject))
    }

    func save(_ grant: UpstreamGrant, service: String, subjectHash: String) async throws(Failure) {
        let plain: Data
        do { plain = try JSONEncoder.vault.encode(grant) } catch { throw .sealing("\(error)") }
        let sealed: String
        do { sealed = try sealer().seal(Array(plain), context: Self.context(service: service, subjectHash: subjectHash)) } catch let failure as Failure {
            throw failure
        } catch {
            throw .sealing("\(error)")
        }
        do {
            try await store.set(Self.recordKey(service: service, subjectHash: subjectHash), Array(sealed.utf8), ttl: nil)
            try await store.addToSet(Self.indexKey, ["\(service):\(subjectHash)"], ttl: nil)
        } catch {
            throw .store(error.description)
        }
        remember(grant, key: "\(service):\(subjectHash)")
    }

    /// Forgets a connection; what it held (to revoke at the upstream), if anything.
    @discardableResult
    public func remove(subject: String, service: String) async throws(Failure) -> UpstreamGrant? {
        let hash = Self.subjectHash(subject)
        let existing = try? await grant(service: service, subjectHash: hash)
        remember(nil, key: "\(service):\(hash)")
        do {
            _ = try await store.delete([Self.recordKey(service: service, subjectHash: hash)])
            try await store.removeFromSet(Self.indexKey, ["\(service):\(hash)"])
        } catch {
            throw .store(error.description)
        }
        return existing ?? nil
    }

    /// How many users are connected to each service (names never leave the store).
    public func connectedCounts() async throws(Failure) -> [String: Int] {
        let members: [String]
        do { members = try await store.setMembers(Self.indexKey) } catch { throw .store(error.description) }
        var counts: [String: Int] = [:]
        for member in members {
            guard let colon = member.lastIndex(of: ":") else { continue }
            counts[String(member[..<colon]), default: 0] += 1
        }
        return counts
    }

    /// Seals every record again under the current key (`admin rotate-store-key`): how many were
    /// resealed, and the records no configured key opens (left as they are).
    public func reseal() async throws(Failure) -> (resealed: Int, unchanged: Int, failed: [String]) {
        let index = SealedRecordIndex(store: store, indexKey: Self.indexKey, record: { member in
            guard let colon = member.lastIndex(of: ":") else { return nil }
            let (service, hash) = (String(member[..<colon]), String(member[member.index(after: colon)...]))
            return (Self.recordKey(service: service, subjectHash: hash), Self.context(service: service, subjectHash: hash))
        }, name: { member in
            guard let colon = member.lastIndex(of: ":") else { return member }
            return String(member[..<colon]) + ":" + member[member.index(after: colon)...].prefix(12)
        })
        let sealer = try sealer()
        do { return try await index.reseal(with: sealer) } catch { throw .store(error.description) }
    }

    /// The connection's grant after a refresh by `refresh`, once per connection at a time: callers
    /// racing here (on this instance or another) get the one refreshed grant. `stale` is the
    /// access token the caller found wanting; a record already holding another token is the
    /// refresh someone else made. nil: the connection is gone (the refresh was refused).
    public func refreshed(
        subject: String, service: String, stale: String,
        refresh: @escaping @Sendable (UpstreamGrant) async -> RefreshOutcome
    ) async -> UpstreamGrant? {
        let hash = Self.subjectHash(subject)
        let key = "\(service):\(hash)"
        let task = refreshes.withLock { running -> Task<UpstreamGrant?, Never> in
            if let task = running[key] { return task }
            let task = Task { [self] in
                defer { _ = refreshes.withLock { $0.removeValue(forKey: key) } }
                return await refreshOnce(service: service, subjectHash: hash, stale: stale, refresh: refresh)
            }
            running[key] = task
            return task
        }
        return await task.value
    }

    public enum RefreshOutcome: Sendable {
        case refreshed(UpstreamGrant)
        /// The authorization server refused the refresh token (`invalid_grant`): disconnected.
        case refused
        /// It could not be asked: the old grant stays.
        case unavailable
    }

    private func refreshOnce(service: String, subjectHash: String, stale: String, refresh: @Sendable (UpstreamGrant) async -> RefreshOutcome) async -> UpstreamGrant? {
        guard let current = try? await grant(service: service, subjectHash: subjectHash) else { return nil }
        if current.accessToken != stale { return current }
        let lockKey = "upstream-refresh-lock:\(service):\(subjectHash)"
        let locked = (try? await store.setIfAbsent(lockKey, Array(ProcessInstance.id.utf8), ttl: .seconds(30))) ?? false
        guard locked else {
            // Another instance refreshes: its record is what we use.
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(100))
                guard let latest = try? await grant(service: service, subjectHash: subjectHash) else { return nil }
                if latest.accessToken != stale { return latest }
            }
            return current
        }
        let result: UpstreamGrant?
        switch await refresh(current) {
        case .refreshed(let grant):
            try? await save(grant, service: service, subjectHash: subjectHash)
            result = grant
        case .refused:
            _ = try? await store.delete([Self.recordKey(service: service, subjectHash: subjectHash)])
            try? await store.removeFromSet(Self.indexKey, ["\(service):\(subjectHash)"])
            remember(nil, key: "\(service):\(subjectHash)")
            result = nil
        case .unavailable:
            result = current
        }
        // Released once the record says what happened (the lock's TTL covers a crash meanwhile).
        _ = try? await store.delete([lockKey])
        return result
    }
}

extension JSONEncoder {
    static var vault: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        return encoder
    }
}

extension JSONDecoder {
    static var vault: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return decoder
    }
}
