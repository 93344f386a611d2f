import Foundation
package import GatewayConfig
package import HTTPTypes

/// Who the client is when proxies stand in front.
package enum ClientAddress {
    package static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    package static let forwardedProto = HTTPField.Name("X-Forwarded-Proto")!

    package static func isTrusted(_ peer: String?, _ trusted: [AddressRange]) -> Bool {
        guard let peer, let address = IPAddress(peer) else { return false }
        return trusted.contains { $0.contains(address) }
    }

    /// The peer address, unless the peer is a trusted proxy: then the right-most address of
    /// `X-Forwarded-For` that is not a trusted proxy (addresses further left were written by the
    /// client itself and prove nothing).
    package static func resolve(peer: String?, forwardedFor: [String], trusted: [AddressRange]) -> String? {
        guard let peer, isTrusted(peer, trusted) else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        var client = peer
        for hop in hops.reversed() {
            guard let address = IPAddress(hop) else { return client }
            client = address.description
            if !trusted.contains(where: { $0.contains(address) }) { return client }
        }
        return client
    }

    /// The key per-address limits count under: IPv4 addresses as they are, IPv6 ones per /64.
    package static func limitKey(_ clientIP: String?) -> String {
        guard let clientIP else { return "unknown" }
        // Asked per request: an address already in canonical IPv4 form is its own key.
        if isCanonicalIPv4(clientIP) { return clientIP }
        return IPAddress(clientIP)?.rateLimitKey ?? clientIP
    }

    /// Four decimal numbers up to 255, without leading zeros, joined by dots.
    static func isCanonicalIPv4(_ text: String) -> Bool {
        var parts = 0
        var digits = 0
        var value = 0
        var leadingZero = false
        for byte in text.utf8 {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return false }
                parts += 1
                (digits, value, leadingZero) = (0, 0, false)
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), !leadingZero else { return false }
            if digits == 0, byte == UInt8(ascii: "0") { leadingZero = true }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            digits += 1
            guard digits <= 3, value <= 255 else { return false }
        }
        return parts == 3 && digits > 0
    }
}
