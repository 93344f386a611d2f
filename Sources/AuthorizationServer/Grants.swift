import Crypto
import Foundation
public import GatewayStore

/// Who signed in, as the grants record it.
public struct GrantSubject: Codable, Sendable, Equatable {
    /// `github:<id>` (or `local:<name>`).
    public var subject: String
    public var login: String
    /// Organisations and teams as read at sign-in, when the allow-lists needed them; refreshes
    /// re-evaluate the allow-lists in force against them.
    public var orgs: [String]?
    public var teams: [String]?
    /// The user's public email at GitHub, when they show one.
    public var email: String?

    public init(subject: String, login: String, orgs: [String]? = nil, teams: [String]? = nil, email: String? = nil) {
        self.subject = subject
        self.login = login
        self.orgs = orgs
        self.teams = teams
        self.email = email
    }

    public var identity: UserIdentity { UserIdentity(login: login, orgs: orgs, teams: teams) }
}

/// What a code or refresh token entitles its client to.
public struct Grant: Codable, Sendable, Equatable {
    public var clientID: String
    public var user: GrantSubject
    public var scope: String
    /// RFC 8707 resource (the MCP endpoint URL) the tokens are for.
    public var resource: String

    public init(clientID: String, user: GrantSubject, scope: String, resource: String) {
        self.clientID = clientID
        self.user = user
        self.scope = scope
        self.resource = resource
    }
}

public enum GrantError: Error, Sendable, Equatable {
    /// RFC 6749 `invalid_grant`, with a description safe to return.
    case invalidGrant(String)
    case storeUnavailable(String)
}

/// Authorization codes: random, single use (consumed atomically, so a concurrent double spend
/// fails), alive for at most 60 s, and bound to the client, redirect URI, PKCE challenge, resource
/// and user they were issued for. Only their hash is stored.
public struct AuthorizationCodes: Sendable {
    struct Record: Codable {
        var grant: Grant
        var redirectURI: String
        var codeChallenge: String
    }

    public static let lifetime: Duration = .seconds(60)
    let store: any KeyValueStore
    /// How long a family revoked by a code replay stays revoked (the refresh-token lifetime).
    let familyLifetime: Duration

    public init(store: any KeyValueStore, familyLifetime: Duration = .seconds(720 * 3600)) {
        self.store = store
        self.familyLifetime = familyLifetime
    }

    public func issue(_ grant: Grant, redirectURI: String, codeChallenge: String) async throws(GrantError) -> String {
        let code = ClientRegistry.randomToken(bytes: 32)
        let record = Record(grant: grant, redirectURI: redirectURI, codeChallenge: codeChallenge)
        do {
            let bytes = Array(try JSONEncoder().encode(record))
            try await store.set("code:\(ClientRegistry.hash(code))", bytes, ttl: Self.lifetime)
        } catch let error as StoreError {
            throw .storeUnavailable(error.description)
        } catch {
            throw .storeUnavailable("cannot encode the code")
        }
        return code
    }

    /// Redeems a code. It is consumed whether or not the checks pass: a code presented with the
    /// wrong client, redirect URI or verifier is burnt, never retried.
    /// How long a redeemed code is remembered, so a replay can revoke what it was exchanged for.
    public static let replayMemory: Duration = .seconds(3600)

    /// Redeems a code; `family` is the sign-in the tokens issued for it will belong to. A code
    /// presented a second time fails and revokes that family (RFC 6749 §4.1.2, RFC 9700 §4.5):
    /// whoever replays a code may have stolen it, so neither copy of the tokens stays usable.
    public func redeem(_ code: String, clientID: String, redirectURI: String, codeVerifier: String, resource: String?, family: String) async throws(GrantError) -> Grant {
        let hash = ClientRegistry.hash(code)
        let bytes: [UInt8]?
        do { bytes = try await store.take("code:\(hash)") } catch { throw .storeUnavailable(error.description) }
        guard let bytes, let record = try? JSONDecoder().decode(Record.self, from: Data(bytes)) else {
            do {
                if let issued = try await store.getString("code-used:\(hash)") {
                    try await store.set("family-revoked:\(issued)", "1", ttl: familyLifetime)
                    throw GrantError.invalidGrant("the authorization code was already used; the tokens issued for it are now revoked")
                }
            } catch let error as GrantError {
                throw error
            } catch {
                throw .storeUnavailable("\(error)")
            }
            throw .invalidGrant("the authorization code is invalid, expired or already used")
        }
        do { try await store.set("code-used:\(hash)", family, ttl: Self.replayMemory) } catch { throw .storeUnavailable(error.description) }
        guard record.grant.clientID == clientID else { throw .invalidGrant("the authorization code was issued to another client") }
        guard record.redirectURI == redirectURI else { throw .invalidGrant("redirect_uri does not match the authorization request") }
        guard PKCE.verify(verifier: codeVerifier, challenge: record.codeChallenge) else {
            throw .invalidGrant("code_verifier does not match the code_challenge")
        }
        if let resource, resource != record.grant.resource {
            throw .invalidGrant("resource does not match the authorization request")
        }
        return record.grant
    }
}

/// PKCE (RFC 7636), S256 only.
public enum PKCE {
    /// A verifier is 43–128 characters of [A-Z a-z 0-9 - . _ ~].
    public static func isValidVerifier(_ verifier: String) -> Bool {
        (43...128).contains(verifier.count) && verifier.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._~".contains($0)) }
    }

    /// A challenge is base64url(SHA-256(verifier)): 43 characters.
    public static func isValidChallenge(_ challenge: String) -> Bool {
        challenge.count == 43 && Base64URL.decode(challenge)?.count == 32
    }

    public static func challenge(for verifier: String) -> String {
        Base64URL.encode(SHA256.hash(data: Data(verifier.utf8)))
    }

    public static func verify(verifier: String, challenge: String) -> Bool {
        guard isValidVerifier(verifier) else { return false }
        return ClientRegistry.constantTimeEqual(Self.challenge(for: verifier), challenge)
    }
}

/// Refresh tokens, rotated on every use. Each token belongs to a family (one sign-in); presenting a
/// token that was already rotated away revokes the whole family, which stops a thief and the
/// victim alike until the user signs in again. Tokens are bound to their client, and deleting a
/// client revokes all its families.
public struct RefreshTokens: Sendable {
    struct Record: Codable {
        var grant: Grant
        var family: String
    }

    let store: any KeyValueStore
    public let lifetime: Duration
    /// How long after a rotation's answer was sent the same client presenting the same token again
    /// gets that answer again instead of revoking the family (`auth.refreshReuseGrace`). Clients
    /// race their own refreshes, and a racer the network delays past the first answer is not a
    /// thief; another client presenting the token is, at any time.
    public let reuseGrace: Duration

    public init(store: any KeyValueStore, lifetime: Duration, reuseGrace: Duration = .zero) {
        self.store = store
        self.lifetime = lifetime
        self.reuseGrace = max(reuseGrace, .zero)
    }

    /// A new family id, for a sign-in's tokens (access tokens carry it as `fam`).
    public static func newFamily() -> String { ClientRegistry.randomToken(bytes: 16) }

    /// Starts `family` (a new sign-in) and returns its first token.
    public func issue(_ grant: Grant, family: String) async throws(GrantError) -> String {
        do {
            try await store.addToSet("client-families:\(grant.clientID)", [family], ttl: lifetime)
        } catch {
            throw .storeUnavailable(error.description)
        }
        return try await token(grant, family: family)
    }

    private func token(_ grant: Grant, family: String) async throws(GrantError) -> String {
        let token = ClientRegistry.randomToken(bytes: 32)
        do {
            let bytes = Array(try JSONEncoder().encode(Record(grant: grant, family: family)))
            try await store.set("refresh:\(ClientRegistry.hash(token))", bytes, ttl: lifetime)
        } catch let error as StoreError {
            throw .storeUnavailable(error.description)
        } catch {
            throw .storeUnavailable("cannot encode the refresh token")
        }
        return token
    }

    /// What presenting a refresh token yields.
    public enum Rotation: Sendable {
        /// The token's successor (and the grant it carries): answer the client, holding the answer
        /// for racing presentations (`holdAnswer`) until it has been sent (`answerSent`).
        case rotated(grant: Grant, refreshToken: String, family: String)
        /// The same token is being answered right now for an earlier presentation by the same
        /// client (clients racing their own refreshes): this is that answer's body, byte for byte.
        case racing(answer: [UInt8])
    }

    /// How long a presentation's answer stays claimable by a racing presentation of the same token
    /// when it is never marked sent (a crash between issuing and answering).
    public static let raceWindow: Duration = .seconds(30)
    /// How long a racing presentation waits for the first one's answer.
    public static let raceWait: Duration = .seconds(5)

    /// Exchanges a refresh token for its successor. The old token is consumed atomically. A second
    /// presentation by the same client while the first is still being answered, or within
    /// `reuseGrace` of its answer, gets the same answer (clients such as Claude race their own
    /// refreshes); any later presentation is reuse and revokes the family (RFC 9700 §4.14.2).
    public func rotate(_ token: String, clientID: String) async throws(GrantError) -> Rotation {
        let hash = ClientRegistry.hash(token)
        let answering = "refresh-answering:\(hash)"
        do {
            // The answering mark is claimed before the token is taken, so a presentation racing
            // this one always finds either the token or the mark.
            guard try await store.setIfAbsent(answering, Array(clientID.utf8), ttl: Self.raceWindow) else {
                if let answer = try await racingAnswer(token: token, hash: hash, clientID: clientID) {
                    return .racing(answer: answer)
                }
                return try await refuseUsed(hash)
            }
            guard let bytes = try await store.take("refresh:\(hash)"),
                  let record = try? JSONDecoder().decode(Record.self, from: Data(bytes))
            else {
                _ = try? await store.delete([answering])
                return try await refuseUsed(hash)
            }
            try await store.set("refresh-used:\(hash)", record.family, ttl: lifetime)
            if try await store.get("family-revoked:\(record.family)") != nil {
                _ = try? await store.delete([answering])
                throw GrantError.invalidGrant("the refresh token was revoked")
            }
            guard record.grant.clientID == clientID else {
                // A token presented by another client is treated as stolen.
                _ = try? await store.delete([answering])
                try await revokeFamily(record.family)
                throw GrantError.invalidGrant("the refresh token was issued to another client")
            }
            let next = try await self.token(record.grant, family: record.family)
            return .rotated(grant: record.grant, refreshToken: next, family: record.family)
        } catch let error as GrantError {
            throw error
        } catch let error as StoreError {
            throw .storeUnavailable(error.description)
        } catch {
            throw .storeUnavailable("\(error)")
        }
    }

    /// A token that is gone: rotated away before (reuse revokes its family) or never valid.
    private func refuseUsed(_ hash: String) async throws -> Rotation {
        if let family = try await store.getString("refresh-used:\(hash)") {
            try await revokeFamily(family)
            // The grace ends with the family: its owner presenting the token again is refused too
            // (the held answer's tokens would not work anyway).
            _ = try? await store.delete(["refresh-answering:\(hash)", "refresh-held:\(hash)"])
            throw GrantError.invalidGrant("the refresh token was already used; every token of this sign-in is now revoked")
        }
        throw GrantError.invalidGrant("the refresh token is invalid or expired")
    }

    /// The first presentation's answer for a presentation that arrived while `token` was still
    /// being answered for `clientID`, or within the reuse grace after: its claim of the answering
    /// mark failed, so the mark was there when it arrived, however late it looks now (a loaded
    /// instance may send the answer, and remove the mark, before this runs). Nil when the
    /// first presentation was for another client (theft), or was refused (no answer was held).
    /// Waits up to `raceWait` for the answer to be held.
    func racingAnswer(token: String, hash: String, clientID: String) async throws -> [UInt8]? {
        let deadline = ContinuousClock.now + Self.raceWait
        while true {
            // nil: nothing held; .some(nil): held for another client (theft); else the answer.
            func heldForThisClient() async throws -> [UInt8]?? {
                try await heldAnswer(token: token, hash: hash).map { $0.clientID == clientID ? $0.answer : nil }
            }
            if let held = try await heldForThisClient() { return held }
            // Nothing held yet: the mark says who is being answered, or that the answer went.
            guard let answering = try await store.getString("refresh-answering:\(hash)") else {
                // An answer is held before its mark goes: one held in between is there now.
                return try await heldForThisClient() ?? nil
            }
            guard answering == clientID else { return nil }
            guard ContinuousClock.now < deadline else {
                throw GrantError.invalidGrant("the refresh token is being answered for another request; retry")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The held answer to `token`'s rotation and the client it was for; nil when none is held
    /// (or it cannot be opened with this token).
    private func heldAnswer(token: String, hash: String) async throws -> (clientID: String, answer: [UInt8])? {
        guard let sealed = try await store.get("refresh-held:\(hash)"),
              let box = try? AES.GCM.SealedBox(combined: sealed), let opened = try? AES.GCM.open(box, using: Self.answerKey(token)),
              opened.count >= 2
        else { return nil }
        let bytes = Array(opened)
        let length = Int(bytes[0]) << 8 | Int(bytes[1])
        guard bytes.count >= 2 + length else { return nil }
        return (String(decoding: bytes[2..<(2 + length)], as: UTF8.self), Array(bytes[(2 + length)...]))
    }

    /// Keeps the answer to a rotation for `clientID`'s presentations racing it, sealed under a key
    /// derived from the presented token (whoever reads the store without that token learns
    /// nothing), with the client it was for (a racer of another client is a thief).
    public func holdAnswer(_ answer: [UInt8], for token: String, clientID: String) async throws(StoreError) {
        let client = Array(clientID.utf8.prefix(0xFFFF))
        let plain = [UInt8(client.count >> 8), UInt8(client.count & 0xFF)] + client + answer
        guard let sealed = try? AES.GCM.seal(plain, using: Self.answerKey(token)).combined else { return }
        // Under a name of its own: an answer held by an older instance (without the client) is not
        // read as one with it during a rolling upgrade; its racers are told to retry instead.
        // Held through the grace too: the answering mark may live that long after the answer.
        try await store.set("refresh-held:\(ClientRegistry.hash(token))", Array(sealed), ttl: Self.raceWindow + reuseGrace)
    }

    /// The answer to `token`'s rotation was sent. `heldFor`: the client whose answer was held
    /// (`holdAnswer`): its presentations within `reuseGrace` from now still get that answer (the
    /// answering mark stays that long). Without it (a refusal, or an answer that could not be
    /// held), and once the grace is over, any presentation arriving from now on is reuse. The held
    /// answer stays (sealed) for racers that arrived before.
    public func answerSent(for token: String, heldFor clientID: String? = nil) async {
        let answering = "refresh-answering:\(ClientRegistry.hash(token))"
        if let clientID, reuseGrace > .zero {
            _ = try? await store.set(answering, clientID, ttl: reuseGrace)
        } else {
            _ = try? await store.delete([answering])
        }
    }

    private static func answerKey(_ token: String) -> SymmetricKey {
        SymmetricKey(data: SHA256.hash(data: Data(("mcpgw-refresh-answer:" + token).utf8)))
    }

    /// What a refresh token stands for, without consuming it (introspection, revocation). Nil when
    /// unknown, rotated away, or revoked.
    public func inspect(_ token: String) async throws(StoreError) -> (grant: Grant, family: String)? {
        guard let bytes = try await store.get("refresh:\(ClientRegistry.hash(token))"),
              let record = try? JSONDecoder().decode(Record.self, from: Data(bytes))
        else { return nil }
        if try await store.get("family-revoked:\(record.family)") != nil { return nil }
        return (record.grant, record.family)
    }

    public func revokeFamily(_ family: String) async throws(StoreError) {
        try await store.set("family-revoked:\(family)", "1", ttl: lifetime)
    }

    /// RFC 7592 DELETE: every refresh token the client holds stops working.
    public func revokeAll(clientID: String) async throws(StoreError) {
        for family in try await store.setMembers("client-families:\(clientID)") {
            try await revokeFamily(family)
        }
        try await store.delete(["client-families:\(clientID)"])
    }
}
