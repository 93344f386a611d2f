public import Crypto
public import CryptoExtras
public import Foundation
public import GatewayStore

/// JWS algorithms the gateway signs with. A key has exactly one; verification uses the algorithm
/// of the key named by `kid`, never the token header's choice, so algorithm confusion is impossible.
public enum SigningAlgorithm: String, Codable, Sendable {
    case es256 = "ES256"
    case rs256 = "RS256"
}

/// One signing key, identified by `kid`.
public struct SigningKey: Sendable {
    public enum Material: Sendable {
        case p256(P256.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey)
    }

    public let kid: String
    public let material: Material
    public let createdAt: Date
    /// When it stopped signing; it stays published until every token it signed has expired.
    public var retiredAt: Date?

    public var algorithm: SigningAlgorithm {
        switch material {
        case .p256: .es256
        case .rsa: .rs256
        }
    }

    public init(kid: String, material: Material, createdAt: Date, retiredAt: Date? = nil) {
        self.kid = kid
        self.material = material
        self.createdAt = createdAt
        self.retiredAt = retiredAt
    }

    public static func generate(algorithm: SigningAlgorithm = .es256, now: Date = Date()) -> SigningKey {
        var random = SystemRandomNumberGenerator()
        let kid = Base64URL.encode((0..<12).map { _ in UInt8.random(in: 0...255, using: &random) })
        switch algorithm {
        case .es256:
            return SigningKey(kid: kid, material: .p256(P256.Signing.PrivateKey()), createdAt: now)
        case .rs256:
            // 2048-bit generation cannot fail short of a broken RNG; fall back to ES256 rather than crash.
            guard let key = try? _RSA.Signing.PrivateKey(keySize: .bits2048) else {
                return SigningKey(kid: kid, material: .p256(P256.Signing.PrivateKey()), createdAt: now)
            }
            return SigningKey(kid: kid, material: .rsa(key), createdAt: now)
        }
    }

    func sign(_ input: Data) throws -> Data {
        switch material {
        case .p256(let key): try key.signature(for: input).rawRepresentation
        case .rsa(let key): try key.signature(for: input, padding: .insecurePKCS1v1_5).rawRepresentation
        }
    }

    func isValidSignature(_ signature: [UInt8], for input: Data) -> Bool {
        switch material {
        case .p256(let key):
            guard let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.publicKey.isValidSignature(parsed, for: input)
        case .rsa(let key):
            return key.publicKey.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: input, padding: .insecurePKCS1v1_5)
        }
    }

    /// The public key as a JWK (RFC 7517/7518).
    public var publicJWK: [String: String] {
        switch material {
        case .p256(let key):
            let point = Array(key.publicKey.x963Representation)  // 0x04 || X || Y
            return [
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": Base64URL.encode(point[1..<33]), "y": Base64URL.encode(point[33..<65]),
            ]
        case .rsa(let key):
            guard let primitives = try? key.publicKey.getKeyPrimitives() else { return ["kty": "RSA", "kid": kid] }
            return [
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": Base64URL.encode(primitives.modulus), "e": Base64URL.encode(primitives.publicExponent),
            ]
        }
    }

    var encodedPrivateKey: String {
        switch material {
        case .p256(let key): Base64URL.encode(key.rawRepresentation)
        case .rsa(let key): key.pemRepresentation
        }
    }

    static func decodeMaterial(_ text: String, algorithm: SigningAlgorithm) throws -> Material {
        switch algorithm {
        case .es256:
            guard let raw = Base64URL.decode(text) else { throw KeyRingError.corrupt }
            return .p256(try P256.Signing.PrivateKey(rawRepresentation: raw))
        case .rs256:
            return .rsa(try _RSA.Signing.PrivateKey(pemRepresentation: text))
        }
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
    public mutating func rotate(algorithm: SigningAlgorithm = .es256, now: Date = Date()) {
        for index in keys.indices where keys[index].retiredAt == nil {
            keys[index].retiredAt = now
        }
        keys.append(.generate(algorithm: algorithm, now: now))
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
        /// Absent in rings written before RS256 support: ES256.
        var algorithm: SigningAlgorithm?
        var privateKey: String
        var createdAt: Double
        var retiredAt: Double?
    }

    func encoded() throws -> [UInt8] {
        let stored = keys.map {
            StoredKey(
                kid: $0.kid, algorithm: $0.algorithm, privateKey: $0.encodedPrivateKey,
                createdAt: $0.createdAt.timeIntervalSince1970, retiredAt: $0.retiredAt?.timeIntervalSince1970
            )
        }
        return Array(try JSONEncoder().encode(stored))
    }

    static func decode(_ bytes: [UInt8]) throws -> KeyRing {
        let stored = try JSONDecoder().decode([StoredKey].self, from: Data(bytes))
        return KeyRing(keys: try stored.map { record in
            SigningKey(
                kid: record.kid, material: try SigningKey.decodeMaterial(record.privateKey, algorithm: record.algorithm ?? .es256),
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

    public func loadOrCreate(algorithm: SigningAlgorithm = .es256, now: Date = Date()) async throws(KeyRingError) -> KeyRing {
        do {
            if let bytes = try await store.get(Self.storeKey) {
                return try Self.decodeRing(bytes)
            }
            let fresh = KeyRing(keys: [.generate(algorithm: algorithm, now: now)])
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
