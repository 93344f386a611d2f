import Crypto
import Foundation
public import GatewayStore

/// A registered client as stored: metadata plus hashes of its secrets (never the secrets).
public struct ClientRecord: Codable, Sendable {
    public var clientID: String
    public var issuedAt: Int
    public var metadata: ClientMetadata
    public var clientSecretHash: String?
    public var registrationTokenHash: String
}

public enum RegistryError: Error, Sendable, Equatable {
    case invalid(RegistrationError)
    /// Missing, wrong, or another client's registration access token; deliberately does not say
    /// whether the client exists.
    case unauthorized
    case rateLimited(retryAfterSeconds: Int)
    case storeUnavailable(String)
}

/// What registration returns to the client once (RFC 7591 §3.2.1).
public struct IssuedCredentials: Sendable {
    public var record: ClientRecord
    public var clientSecret: String?
    public var registrationAccessToken: String
}

/// Dynamic client registration (RFC 7591) and client self-management (RFC 7592) over the store.
public struct ClientRegistry: Sendable {
    public struct Settings: Sendable {
        /// Registrations per client IP per minute.
        public var rateLimitPerMinute: Int
        /// A client unused for this long expires.
        public var unusedClientTTL: Duration

        /// Registrations per minute for the whole gateway.
        public var globalRateLimitPerMinute: Int

        public init(rateLimitPerMinute: Int = 60, unusedClientTTL: Duration = .seconds(30 * 86400), globalRateLimitPerMinute: Int = 600) {
            self.rateLimitPerMinute = rateLimitPerMinute
            self.unusedClientTTL = unusedClientTTL
            self.globalRateLimitPerMinute = globalRateLimitPerMinute
        }
    }

    let store: any KeyValueStore
    let settings: Settings

    public init(store: any KeyValueStore, settings: Settings) {
        self.store = store
        self.settings = settings
    }

    static func clientKey(_ clientID: String) -> String { "client:\(clientID)" }

    /// `clientKey`: the address the limit counts for (an IPv6 client by its /64).
    public func register(_ body: [String: Any], clientKey: String) async throws(RegistryError) -> IssuedCredentials {
        for (key, limit) in [("ratelimit:register:\(clientKey)", settings.rateLimitPerMinute), ("ratelimit:register-all", settings.globalRateLimitPerMinute)] {
            let attempts: Int
            do {
                attempts = try await store.increment(key, window: .seconds(60))
            } catch {
                throw .storeUnavailable(error.description)
            }
            if attempts > limit {
                let remaining = (try? await store.timeToLive(key)) ?? nil
                throw .rateLimited(retryAfterSeconds: max(1, Int(remaining?.components.seconds ?? 60)))
            }
        }
        let metadata: ClientMetadata
        do { metadata = try ClientMetadataValidator.validate(body) } catch { throw .invalid(error) }

        let clientID = "mcpgw-" + Self.randomToken(bytes: 16)
        let secret = metadata.isConfidential ? Self.randomToken(bytes: 32) : nil
        let registrationToken = Self.randomToken(bytes: 32)
        let record = ClientRecord(
            clientID: clientID, issuedAt: Int(Date().timeIntervalSince1970), metadata: metadata,
            clientSecretHash: secret.map(Self.hash), registrationTokenHash: Self.hash(registrationToken)
        )
        try await save(record)
        return IssuedCredentials(record: record, clientSecret: secret, registrationAccessToken: registrationToken)
    }

    /// The client, if `registrationToken` is its registration access token (constant-time compare).
    public func authorize(clientID: String, registrationToken: String?) async throws(RegistryError) -> ClientRecord {
        guard let registrationToken, !registrationToken.isEmpty else { throw .unauthorized }
        let record = try await load(clientID)
        // Compare hashes in constant time even when the client does not exist, so timing says nothing.
        let expected = record?.registrationTokenHash ?? Self.hash("no-such-client")
        guard Self.constantTimeEqual(expected, Self.hash(registrationToken)), let record else { throw .unauthorized }
        try await save(record)  // a use refreshes the unused-client expiry
        return record
    }

    /// RFC 7592 PUT: replaces the metadata, validated like a registration. A client that becomes
    /// confidential without a secret gets one (returned once).
    public func update(_ record: ClientRecord, with body: [String: Any]) async throws(RegistryError) -> (ClientRecord, String?) {
        guard let bodyClientID = body["client_id"] as? String, bodyClientID == record.clientID else {
            throw .invalid(RegistrationError(code: "invalid_client_metadata", description: "client_id in the body must equal the client being updated"))
        }
        var fields = body
        for key in ["client_id", "client_secret", "registration_access_token", "registration_client_uri", "client_id_issued_at", "client_secret_expires_at"] {
            fields[key] = nil
        }
        let metadata: ClientMetadata
        do { metadata = try ClientMetadataValidator.validate(fields) } catch { throw .invalid(error) }
        var updated = record
        updated.metadata = metadata
        var newSecret: String?
        if metadata.isConfidential, updated.clientSecretHash == nil {
            let secret = Self.randomToken(bytes: 32)
            updated.clientSecretHash = Self.hash(secret)
            newSecret = secret
        } else if !metadata.isConfidential {
            updated.clientSecretHash = nil
        }
        try await save(updated)
        return (updated, newSecret)
    }

    /// A use at the token endpoint keeps the client from expiring as unused.
    public func touch(_ record: ClientRecord) async throws(RegistryError) {
        try await save(record)
    }

    public func delete(_ record: ClientRecord) async throws(RegistryError) {
        do {
            try await store.delete([Self.clientKey(record.clientID)])
            try await store.removeFromSet(Self.indexKey, [record.clientID])
        } catch {
            throw .storeUnavailable(error.description)
        }
    }

    public func load(_ clientID: String) async throws(RegistryError) -> ClientRecord? {
        let bytes: [UInt8]?
        do { bytes = try await store.get(Self.clientKey(clientID)) } catch { throw .storeUnavailable(error.description) }
        guard let bytes else { return nil }
        return try? JSONDecoder().decode(ClientRecord.self, from: Data(bytes))
    }

    /// The registered clients, newest first (for the admin commands); ids whose record expired
    /// are pruned from the index.
    public func list() async throws(RegistryError) -> [ClientRecord] {
        do {
            var records: [ClientRecord] = []
            var gone: [String] = []
            for clientID in try await store.setMembers(Self.indexKey) {
                if let record = try await load(clientID) { records.append(record) } else { gone.append(clientID) }
            }
            try await store.removeFromSet(Self.indexKey, gone)
            return records.sorted { ($0.issuedAt, $0.clientID) > ($1.issuedAt, $1.clientID) }
        } catch let error as RegistryError {
            throw error
        } catch {
            throw .storeUnavailable("\(error)")
        }
    }

    /// The set of registered client ids.
    static let indexKey = "clients"

    private func save(_ record: ClientRecord) async throws(RegistryError) {
        do {
            let bytes = Array(try JSONEncoder().encode(record))
            try await store.set(Self.clientKey(record.clientID), bytes, ttl: settings.unusedClientTTL)
            try await store.addToSet(Self.indexKey, [record.clientID], ttl: settings.unusedClientTTL)
        } catch let error as StoreError {
            throw .storeUnavailable(error.description)
        } catch {
            throw .storeUnavailable("cannot encode the client record")
        }
    }

    // MARK: secrets

    /// base64url of `bytes` bytes from the system CSPRNG.
    public static func randomToken(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return Base64URL.encode((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// SHA-256 hex: secrets are high-entropy, so a plain hash is enough at rest.
    public static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    public static func constantTimeEqual(_ lhs: String, _ rhs: String) -> Bool {
        constantTimeEqual(Array(lhs.utf8), Array(rhs.utf8))
    }

    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

extension ClientRecord {
    /// The RFC 7591/7592 response body (without secrets, which are added once at issuance).
    public func responseBody(registrationClientURI: String) -> [String: Any] {
        var body: [String: Any] = [
            "client_id": clientID,
            "client_id_issued_at": issuedAt,
            "redirect_uris": metadata.redirect_uris,
            "token_endpoint_auth_method": metadata.token_endpoint_auth_method.rawValue,
            "grant_types": metadata.grant_types,
            "response_types": metadata.response_types,
            "application_type": metadata.application_type,
            "registration_client_uri": registrationClientURI,
        ]
        let optional: [(String, Any?)] = [
            ("client_name", metadata.client_name), ("client_uri", metadata.client_uri), ("logo_uri", metadata.logo_uri),
            ("scope", metadata.scope), ("contacts", metadata.contacts), ("tos_uri", metadata.tos_uri), ("policy_uri", metadata.policy_uri),
            ("software_id", metadata.software_id), ("software_version", metadata.software_version),
        ]
        for (key, value) in optional {
            if let value { body[key] = value }
        }
        if metadata.isConfidential { body["client_secret_expires_at"] = 0 }
        return body
    }
}
