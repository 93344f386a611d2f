import NIOFoundationEssentialsCompat
import AuthorizationServer
import Crypto
import Foundation
package import MCPMessages
package import NIOCore
import Synchronization

/// Ties a 2026-07-28 child's `requestState` to that child: the state the client sees is
/// `mcpgw~<child session>~<mac>~<child's state>` (routed to this instance: `RequestStateRouting`), and the retry is sent back to the same child with the
/// child's own state. Routing only: the pool it is looked up in is the caller's own.
package enum RequestStateAffinity {
    package static let prefix = "mcpgw~"
    /// Signs the tags this process hands out: a tag is only honoured for the caller it was given to.
    private static let key = SymmetricKey(size: .bits256)

    /// The child and the child's own state of a tag this process gave `requester`; nil for any
    /// other tag (forged, altered, or another caller's).
    package static func parse(_ routed: String, requester: String) -> (sessionID: String, original: String)? {
        let state = RequestStateRouting.local(routed)
        guard state.hasPrefix(prefix) else { return nil }
        let parts = state.dropFirst(prefix.count).split(separator: "~", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        let (sessionID, mac, original) = (String(parts[0]), String(parts[1]), String(parts[2]))
        guard ClientRegistry.constantTimeEqual(mac, Self.mac(sessionID: sessionID, original: original, requester: requester)) else { return nil }
        return (sessionID, original)
    }

    /// An InputRequiredResult with its requestState tagged (added when the child gave none).
    package static func tagging(_ bytes: ByteBuffer, sessionID: String, requester: String) -> ByteBuffer {
        (try? JSONRPCMessage(parsing: bytes))?.editing("result") { result in
            let original = (result["requestState"] as? String) ?? ""
            result["requestState"] = RequestStateRouting.tag(prefix + sessionID + "~" + mac(sessionID: sessionID, original: original, requester: requester) + "~" + original)
        }?.bytes ?? bytes
    }

    private static func mac(sessionID: String, original: String, requester: String) -> String {
        let input = Data("\(requester)\u{0}\(sessionID)\u{0}\(original)".utf8)
        return HMAC<SHA256>.authenticationCode(for: input, using: key).prefix(16).map { byte in
            String(byte, radix: 16).count == 1 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
        }.joined()
    }

    /// The retry with the child's own requestState (none when it gave none).
    package static func restoring(_ message: JSONRPCMessage, state: String) -> JSONRPCMessage? {
        message.editing("params") { params in params["requestState"] = state.isEmpty ? nil : state }
    }
}
