import Crypto
public import Foundation

/// A request one instance forwards to another, signed under `cluster.secret`: HMAC-SHA256 over the
/// method, the path with its query, the session id, the time, the forwarded identity and the body's
/// SHA-256. The receiving instance trusts the identity only when the signature verifies and the
/// time is within `maximumAge` (a replay window a private network keeps small).
public struct HopSignature: Sendable {
    public static let identityHeader = "mcp-gateway-hop-identity"
    public static let timeHeader = "mcp-gateway-hop-time"
    public static let signatureHeader = "mcp-gateway-hop-signature"
    public static let instanceHeader = "mcp-gateway-hop-from"
    public static let maximumAge: Int = 30

    private let key: SymmetricKey

    public init(secret: String) {
        key = SymmetricKey(data: Data(secret.utf8))
    }

    public struct Signed: Sendable, Equatable {
        public var time: String
        public var signature: String
    }

    private static func message(method: String, target: String, sessionID: String?, time: String, identity: String, body: some Sequence<UInt8>) -> Data {
        let bodyHash = SHA256.hash(data: Array(body)).map { String(format: "%02x", $0) }.joined()
        return Data(["mcp-gateway-hop-v1", method, target, sessionID ?? "", time, identity, bodyHash].joined(separator: "\n").utf8)
    }

    public func sign(method: String, target: String, sessionID: String?, identity: String, body: some Sequence<UInt8>, now: Date = Date()) -> Signed {
        let time = String(Int(now.timeIntervalSince1970))
        let code = HMAC<SHA256>.authenticationCode(for: Self.message(method: method, target: target, sessionID: sessionID, time: time, identity: identity, body: body), using: key)
        return Signed(time: time, signature: Data(code).base64EncodedString())
    }

    /// True when `signature` is this cluster's for exactly this request, made within `maximumAge`.
    public func verify(method: String, target: String, sessionID: String?, identity: String, body: some Sequence<UInt8>, time: String, signature: String, now: Date = Date()) -> Bool {
        guard let sent = Int(time), abs(Int(now.timeIntervalSince1970) - sent) <= Self.maximumAge,
              let given = Data(base64Encoded: signature), given.count == SHA256.byteCount
        else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(given, authenticating: Self.message(method: method, target: target, sessionID: sessionID, time: time, identity: identity, body: body), using: key)
    }
}
