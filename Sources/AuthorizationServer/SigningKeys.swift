public import Crypto
import Foundation
public import GatewayStore

/// One ES256 signing key, identified by `kid`.
public struct SigningKey: Sendable {
    public let kid: String
    public let privateKey: P256.Signing.PrivateKey
    public let createdAt: Date
    /// When it stopped signing; it stays published until every token it signed has expired.
    public var retiredAt: Date?

    public init(kid: String, privateKey: P256.Signing.PrivateKey, createdAt: Date, retiredAt: Date? = nil) {
        self.kid = kid
        self.privateKey = privateKey
        self.createdAt = createdAt
        self.retiredAt = retiredAt
    }

    public static func generate(now: Date = Date()) -> SigningKey {
        var random = SystemRandomNumberGenerator()
        let kid = Base64URL.encode((0..<12).map { _ in UInt8.random(in: 0...255, using: &random) })
        return SigningKey(kid: kid, privateKey: P256.Signing.PrivateKey(), createdAt: now)
    }

    /// The public key as a JWK (RFC 7517/7518): kty EC, crv P-256, x, y.
    public var publicJWK: [String: String] {
        let point = Array(privateKey.publicKey.x963Representation)  // 0x04 || X || Y
        return [
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": Base64URL.encode(point[1..<33]), "y": Base64URL.encode(point[33..<65]),
        ]
    }
}

/// The gateway's signing keys. One signs; retired ones stay published while tokens they signed
/// can still be valid. Persisted in the store under one key, so every gateway instance sharing the
/// store signs and verifies with the same keys.
///
/// The private keys are stored as they are: instances must share them. Protect the store (network
/// isolation, AUTH) accordingly; see the threat model in docs.
public struct KeyRing: Sendable {
    public private(set) var keys: [SigningKey]

    public init(keys: [SigningKey]) {
        self.keys = keys
    }

    /// The key that signs new tokens: the newest one not retired.
    public var current: SigningKey? { keys.filter { $0.retiredAt == nil }.max { $0.createdAt < $1.createdAt } }

    public func key(id kid: String) -> SigningKey? { keys.first { $0.kid == kid } }

    /// Retires the current key and adds a new one that signs from now on.
    public mutating func rotate(now: Date = Date()) {
        for index in keys.indices where keys[index].retiredAt == nil {
            keys[index].retiredAt = now
        }
        keys.append(.generate(now: now))
    }

    /// Drops retired keys whose tokens have all expired (retired longer ago than the longest token life).
    public mutating func prune(maxTokenLifetime: TimeInterval, now: Date = Date()) {
        keys.removeAll { key in
            guard let retired = key.retiredAt else { return false }
            return now.timeIntervalSince(retired) > maxTokenLifetime
        }
    }

    /// JWKS document: every key that may still verify a live token.
    public var jwks: [String: [[String: String]]] {
        ["keys": keys.sorted { $0.createdAt > $1.createdAt }.map(\.publicJWK)]
    }

    // MARK: persistence

    struct StoredKey: Codable {
        var kid: String
        var privateKey: String
        var createdAt: Double
        var retiredAt: Double?
    }

    func encoded() throws -> [UInt8] {
        let stored = keys.map {
            StoredKey(
                kid: $0.kid, privateKey: Base64URL.encode($0.privateKey.rawRepresentation),
                createdAt: $0.createdAt.timeIntervalSince1970, retiredAt: $0.retiredAt?.timeIntervalSince1970
            )
        }
        return Array(try JSONEncoder().encode(stored))
    }

    static func decode(_ bytes: [UInt8]) throws -> KeyRing {
        let stored = try JSONDecoder().decode([StoredKey].self, from: Data(bytes))
        return KeyRing(keys: try stored.map { record in
            guard let raw = Base64URL.decode(record.privateKey) else { throw KeyRingError.corrupt }
            return SigningKey(
                kid: record.kid, privateKey: try P256.Signing.PrivateKey(rawRepresentation: raw),
                createdAt: Date(timeIntervalSince1970: record.createdAt), retiredAt: record.retiredAt.map(Date.init(timeIntervalSince1970:))
            )
        })
    }
}

public enum KeyRingError: Error, Equatable {
    case corrupt
    case store(StoreError)
}

/// Loads the key ring from the store, creating the first key when there is none. Two instances
/// starting at once agree on one ring: creation uses set-if-absent and the loser reads the winner's.
public struct KeyRingRepository: Sendable {
    public static let storeKey = "keys:signing"
    let store: any KeyValueStore

    public init(store: any KeyValueStore) {
        self.store = store
    }

    public func loadOrCreate(now: Date = Date()) async throws(KeyRingError) -> KeyRing {
        do {
            if let bytes = try await store.get(Self.storeKey) {
                return try Self.decodeRing(bytes)
            }
            let fresh = KeyRing(keys: [.generate(now: now)])
            let encoded = try Self.encodeRing(fresh)
            if try await store.setIfAbsent(Self.storeKey, encoded, ttl: nil) {
                return fresh
            }
            guard let bytes = try await store.get(Self.storeKey) else { throw KeyRingError.corrupt }
            return try Self.decodeRing(bytes)
        } catch let error as StoreError {
            throw .store(error)
        } catch let error as KeyRingError {
            throw error
        } catch {
            throw .corrupt
        }
    }

    public func save(_ ring: KeyRing) async throws(KeyRingError) {
        do {
            try await store.set(Self.storeKey, try Self.encodeRing(ring), ttl: nil)
        } catch let error as StoreError {
            throw .store(error)
        } catch {
            throw .corrupt
        }
    }

    private static func encodeRing(_ ring: KeyRing) throws(KeyRingError) -> [UInt8] {
        do { return try ring.encoded() } catch { throw .corrupt }
    }

    private static func decodeRing(_ bytes: [UInt8]) throws(KeyRingError) -> KeyRing {
        do { return try KeyRing.decode(bytes) } catch { throw .corrupt }
    }
}
