public import GatewayConfig
import Crypto
import Foundation
import AuthorizationServer

/// Seals the secrets the gateway keeps for users (their upstream tokens) with AES-256-GCM.
/// A sealed value is `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`: the key id (a hash of
/// the key, never the key) says which of `store.encryptionKey` / `previousEncryptionKeys` opens
/// it, so keys can be rotated. The additional data binds a value to where it is stored (its
/// user and service): a value copied under another user's key does not open.
public struct SecretSealer: Sendable {
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public let keys: StoreKeys

    public init(keys: StoreKeys) {
        self.keys = keys
    }

    /// Eight bytes of SHA-256 over the key, hex: names a key without revealing it.
    public static func keyID(_ key: [UInt8]) -> String {
        SHA256.hash(data: Data("mcp-gateway store key".utf8) + Data(key)).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    public var currentKeyID: String { Self.keyID(keys.current) }

    public func seal(_ plaintext: [UInt8], context: String) throws(Failure) -> String {
        do {
            let box = try AES.GCM.seal(plaintext, using: SymmetricKey(data: keys.current), authenticating: Data(context.utf8))
            guard let combined = box.combined else { throw Failure(description: "sealing failed") }
            return "v1.\(currentKeyID).\(Base64URL.encode(Array(combined)))"
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(description: "sealing failed")
        }
    }

    /// The key id a sealed value names (nil: not a sealed value).
    public static func keyID(of sealed: String) -> String? {
        let parts = sealed.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "v1" else { return nil }
        return String(parts[1])
    }

    public func open(_ sealed: String, context: String) throws(Failure) -> [UInt8] {
        let parts = sealed.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "v1", let bytes = Base64URL.decode(parts[2]) else {
            throw Failure(description: "not a sealed value")
        }
        guard let key = ([keys.current] + keys.previous).first(where: { Self.keyID($0) == parts[1] }) else {
            throw Failure(description: "sealed with key \(parts[1]), which is neither store.encryptionKey nor one of store.previousEncryptionKeys")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: bytes)
            return Array(try AES.GCM.open(box, using: SymmetricKey(data: key), authenticating: Data(context.utf8)))
        } catch {
            throw Failure(description: "the sealed value does not open (altered, or stored under another user or service)")
        }
    }
}
