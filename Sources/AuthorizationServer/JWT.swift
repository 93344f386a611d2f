import Crypto
import Foundation

/// Claims of the gateway's access tokens.
public struct AccessTokenClaims: Codable, Sendable, Equatable {
    public var iss: String
    public var sub: String
    public var aud: String
    public var exp: Int
    public var iat: Int
    public var jti: String
    public var client_id: String
    public var scope: String
    public var login: String
    public var email: String?
    /// Not before (RFC 7519 §4.1.5); the gateway sets it to `iat`.
    public var nbf: Int?
    /// The sign-in (refresh-token family) the token belongs to: revoking the family (refresh
    /// token replay, authorization code replay, revocation) revokes the access tokens too.
    public var fam: String?
    /// `client_credentials` for a machine client's token (`auth.clients`), whose client must
    /// still be configured when the token is used; absent for user tokens.
    public var gty: String?

    public init(iss: String, sub: String, aud: String, exp: Int, iat: Int, jti: String, client_id: String, scope: String, login: String, email: String? = nil, nbf: Int? = nil, fam: String? = nil, gty: String? = nil) {
        self.iss = iss
        self.sub = sub
        self.aud = aud
        self.exp = exp
        self.iat = iat
        self.jti = jti
        self.client_id = client_id
        self.scope = scope
        self.login = login
        self.email = email
        self.nbf = nbf
        self.fam = fam
        self.gty = gty
    }
}

public enum JWTError: Error, Equatable, Sendable {
    case malformed
    case unsupportedAlgorithm(String)
    case unknownKey(String)
    case badSignature
}

/// Compact JWS (RFC 7515/7518) with ES256 or RS256. A token verifies only with the key its `kid`
/// names and only if its `alg` is that key's algorithm, so `alg: none` and algorithm-confusion
/// attacks have nothing to work with.
public enum JWT {
    struct Header: Codable {
        var alg: String
        var typ: String?
        var kid: String?
    }

    /// `type`: the header's `typ` (RFC 9068 `at+jwt` for access tokens).
    public static func sign<Claims: Encodable>(_ claims: Claims, with key: SigningKey, type: String = "at+jwt") throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let header = Base64URL.encode(try encoder.encode(Header(alg: key.algorithm.rawValue, typ: type, kid: key.kid)))
        let payload = Base64URL.encode(try encoder.encode(claims))
        let signingInput = "\(header).\(payload)"
        let signature = try key.sign(Data(signingInput.utf8))
        return "\(signingInput).\(Base64URL.encode(signature))"
    }

    /// Verifies the signature with the ring's key named by `kid` and decodes the claims. Claim
    /// checks (issuer, audience, expiry) are the caller's: they depend on the route.
    /// `requiredType`: the header's `typ` must be this (an identity token is not an access token).
    public static func verify<Claims: Decodable>(_ token: String, keys: KeyRing, as type: Claims.Type = Claims.self, requiredType: String? = nil) throws(JWTError) -> Claims {
        // Split on the byte: a split on `Character`s walks grapheme breaks (~200 000 instructions
        // for an access token). Only ASCII parts decode, and an ASCII string splits the same way.
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).map(Substring.init)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let signatureBytes = Base64URL.decode(parts[2])
        else { throw .malformed }
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(headerBytes)) else { throw .malformed }
        if let requiredType, header.typ?.lowercased() != requiredType { throw .malformed }
        guard SigningAlgorithm(rawValue: header.alg) != nil else { throw .unsupportedAlgorithm(header.alg) }
        guard let kid = header.kid, let key = keys.key(id: kid) else { throw .unknownKey(header.kid ?? "") }
        guard header.alg == key.algorithm.rawValue else { throw .unsupportedAlgorithm(header.alg) }
        guard key.isValidSignature(signatureBytes, for: Data("\(parts[0]).\(parts[1])".utf8)) else { throw .badSignature }
        guard let claims = try? JSONDecoder().decode(Claims.self, from: Data(payloadBytes)) else { throw .malformed }
        return claims
    }
}
