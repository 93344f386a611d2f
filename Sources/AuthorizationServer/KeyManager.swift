public import Foundation
public import GatewayStore

/// The signing keys in force for this instance: the ring shared through the store, re-read every
/// `refreshInterval` so a rotation made by another instance is seen, and rotated when the current
/// key is older than `rotationInterval`. Retired keys stay published (JWKS) and keep verifying
/// until every token they signed has expired, then they are pruned.
public actor KeyManager {
    public struct Settings: Sendable {
        public var algorithm: SigningAlgorithm
        public var rotationInterval: TimeInterval
        /// The longest life of anything a key signs: retired keys are kept this long.
        public var maxTokenLifetime: TimeInterval
        public var refreshInterval: TimeInterval

        public init(algorithm: SigningAlgorithm, rotationInterval: TimeInterval, maxTokenLifetime: TimeInterval, refreshInterval: TimeInterval = 30) {
            self.algorithm = algorithm
            self.rotationInterval = rotationInterval
            self.maxTokenLifetime = maxTokenLifetime
            self.refreshInterval = refreshInterval
        }
    }

    private let repository: KeyRingRepository
    private let store: any KeyValueStore
    private let settings: Settings
    private let now: @Sendable () -> Date
    private var ring: KeyRing?
    private var loadedAt: Date = .distantPast

    public init(store: any KeyValueStore, settings: Settings, now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.repository = KeyRingRepository(store: store)
        self.settings = settings
        self.now = now
    }

    /// The ring, re-read from the store when stale, rotated when due.
    public func current() async throws(KeyRingError) -> KeyRing {
        let time = now()
        if let ring, time.timeIntervalSince(loadedAt) < settings.refreshInterval, !isRotationDue(ring, at: time) {
            return ring
        }
        var loaded = try await repository.loadOrCreate(algorithm: settings.algorithm, now: time)
        if isRotationDue(loaded, at: time) {
            loaded = try await rotate(loaded, at: time)
        }
        ring = loaded
        loadedAt = time
        return loaded
    }

    private func isRotationDue(_ ring: KeyRing, at time: Date) -> Bool {
        guard let current = ring.current else { return true }
        return time.timeIntervalSince(current.createdAt) >= settings.rotationInterval || current.algorithm != settings.algorithm
    }

    /// One instance rotates (a short lock in the store); the others read its result.
    private func rotate(_ ring: KeyRing, at time: Date) async throws(KeyRingError) -> KeyRing {
        let lock = "keys:rotation-lock"
        let acquired: Bool
        do { acquired = try await store.setIfAbsent(lock, Array("1".utf8), ttl: .seconds(10)) } catch { throw .store(error) }
        guard acquired else {
            // Another instance is rotating: use what is stored now; the next refresh sees its key.
            return try await repository.loadOrCreate(algorithm: settings.algorithm, now: time)
        }
        var rotated = try await repository.loadOrCreate(algorithm: settings.algorithm, now: time)
        if isRotationDue(rotated, at: time) {
            rotated.rotate(algorithm: settings.algorithm, now: time)
        }
        rotated.prune(maxTokenLifetime: settings.maxTokenLifetime, now: time)
        try await repository.save(rotated)
        _ = try? await store.delete([lock])
        return rotated
    }
}
