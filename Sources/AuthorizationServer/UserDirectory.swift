public import Foundation
public import GatewayStore

/// Who has signed in (for `mcp-gateway admin users list` and the admin page) and which sign-ins
/// (token families) each user holds, so that all of a user's tokens can be revoked at once.
///
/// Kept in the store: `user:<login>` (a `UserRecord`, expiring a refresh-token lifetime after the
/// last activity), the index set `users`, and `user-families:<login>`. Logins are compared
/// lower-cased, as GitHub's are.
public struct UserDirectory: Sendable {
    public struct UserRecord: Codable, Sendable, Equatable {
        public var login: String
        public var subject: String
        /// Unix seconds.
        public var firstSeen: Int
        /// The last sign-in or token refresh (Unix seconds).
        public var lastSeen: Int
        public var signIns: Int
        public var lastClientID: String
    }

    let store: any KeyValueStore
    /// How long a record outlives the user's last activity (the refresh-token lifetime).
    let lifetime: Duration

    public init(store: any KeyValueStore, lifetime: Duration) {
        self.store = store
        self.lifetime = lifetime
    }

    private static func key(_ login: String) -> String { "user:\(login.lowercased())" }
    private static func familiesKey(_ login: String) -> String { "user-families:\(login.lowercased())" }

    /// A user was granted a code (signed in).
    public func recordSignIn(login: String, subject: String, clientID: String, now: Date = Date()) async throws(StoreError) {
        let seconds = Int(now.timeIntervalSince1970)
        var record = try await load(login) ?? UserRecord(login: login, subject: subject, firstSeen: seconds, lastSeen: seconds, signIns: 0, lastClientID: clientID)
        record.login = login
        record.subject = subject
        record.lastSeen = seconds
        record.signIns += 1
        record.lastClientID = clientID
        try await save(record)
        try await store.addToSet("users", [login.lowercased()], ttl: lifetime)
    }

    /// A user's tokens were refreshed: they are still around.
    public func recordActivity(login: String, now: Date = Date()) async throws(StoreError) {
        guard var record = try await load(login) else { return }
        record.lastSeen = Int(now.timeIntervalSince1970)
        try await save(record)
    }

    /// A new sign-in's tokens (`family`) belong to `login`.
    public func addFamily(login: String, family: String) async throws(StoreError) {
        try await store.addToSet(Self.familiesKey(login), [family], ttl: lifetime)
    }

    public func load(_ login: String) async throws(StoreError) -> UserRecord? {
        guard let bytes = try await store.get(Self.key(login)) else { return nil }
        return try? JSONDecoder().decode(UserRecord.self, from: Data(bytes))
    }

    /// Every user with a record, most recently seen first; index entries whose record expired are
    /// pruned.
    public func list() async throws(StoreError) -> [UserRecord] {
        var records: [UserRecord] = []
        var gone: [String] = []
        for login in try await store.setMembers("users") {
            if let record = try await load(login) { records.append(record) } else { gone.append(login) }
        }
        try await store.removeFromSet("users", gone)
        return records.sorted { ($0.lastSeen, $0.login) > ($1.lastSeen, $1.login) }
    }

    /// Revokes every sign-in of `login`: its refresh tokens stop working at once and its access
    /// tokens when the resource's token cache next checks (seconds). Returns how many sign-ins.
    public func revokeAll(login: String, refreshTokens: RefreshTokens) async throws(StoreError) -> Int {
        let families = try await store.setMembers(Self.familiesKey(login))
        for family in families {
            try await refreshTokens.revokeFamily(family)
        }
        try await store.delete([Self.familiesKey(login)])
        return families.count
    }

    private func save(_ record: UserRecord) async throws(StoreError) {
        let bytes: [UInt8]
        do { bytes = Array(try JSONEncoder().encode(record)) } catch { throw .rejected("cannot encode the user record") }
        try await store.set(Self.key(record.login), bytes, ttl: lifetime)
    }
}
