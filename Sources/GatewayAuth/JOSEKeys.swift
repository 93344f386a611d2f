import AuthorizationServer
import Foundation
import JWTKit
package import Logging

/// A JSON Web Key Set someone else publishes (an external issuer, a `private_key_jwt` client),
/// ready to check signatures with JWTKit. Only signing keys of the accepted types are kept: an
/// HMAC (`oct`) key in a published set is never used, since a published key is no secret. A token
/// must name an accepted algorithm (RS256, ES256, EdDSA) that matches its key's type, so `alg:
/// none` and a public key used as an HMAC secret are refused before any signature check.
package struct JOSEKeys: Sendable {
    /// The algorithms accepted, with the JWK key type each needs.
    package static let algorithms: [String: String] = ["RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"]

    let collection: JWTKeyCollection
    /// Key type by key id (keys published without an id get `#<index>`).
    package let types: [String: String]

    package init(_ set: [String: Any], logger: Logger) async {
        let entries = (set["keys"] as? [[String: Any]]) ?? []
        let collection = JWTKeyCollection()
        var types: [String: String] = [:]
        for (index, original) in entries.enumerated() {
            guard let type = original["kty"] as? String, Self.algorithms.values.contains(type) else { continue }
            if let use = original["use"] as? String, use != "sig" { continue }
            if let algorithm = original["alg"] as? String, Self.algorithms[algorithm] != type { continue }
            var entry = original
            let kid = (entry["kid"] as? String) ?? "#\(index)"
            entry["kid"] = kid
            do {
                let jwk = try JSONDecoder().decode(JWK.self, from: try JSONSerialization.data(withJSONObject: entry))
                try await collection.add(jwk: jwk)
                types[kid] = type
            } catch {
                logger.notice("a published key cannot be used", metadata: ["kid": "\(kid)", "error": "\(error)"])
            }
        }
        self.collection = collection
        self.types = types
    }

    /// Whether a token naming `keyID` could be checked with this set (nil: no key id).
    package func knows(_ keyID: String?) -> Bool {
        keyID.map { types[$0] != nil } ?? true
    }

    /// The verified payload of `token` (its claims are the caller's to check).
    package func verify(_ token: String) async throws(JOSEError) -> [String: Any] {
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, let headerBytes = Base64URL.decode(segments[0]), let payloadBytes = Base64URL.decode(segments[1]),
              let header = (try? JSONSerialization.jsonObject(with: Data(headerBytes))) as? [String: Any],
              let payload = (try? JSONSerialization.jsonObject(with: Data(payloadBytes))) as? [String: Any]
        else { throw JOSEError("the token is not a JWT") }
        guard let algorithm = header["alg"] as? String, let keyType = Self.algorithms[algorithm] else {
            throw JOSEError("the token's algorithm is not accepted (RS256, ES256 or EdDSA)")
        }
        let keyID = header["kid"] as? String
        if let keyID {
            guard let type = types[keyID] else { throw JOSEError("the token's key id is not among the published keys") }
            guard type == keyType else { throw JOSEError("the token's algorithm does not match its key") }
        } else if !types.values.contains(keyType) {
            throw JOSEError("no published key fits the token's algorithm")
        }
        do {
            _ = try await collection.verify(token, as: SignatureOnly.self, iteratingKeys: keyID == nil)
        } catch {
            throw JOSEError("the token's signature is not valid")
        }
        return payload
    }
}

package struct JOSEError: Error, CustomStringConvertible {
    package var description: String
    package init(_ description: String) { self.description = description }
}

/// JWTKit checks the signature; the claims are read and checked by the caller.
struct SignatureOnly: JWTPayload {
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {}
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
