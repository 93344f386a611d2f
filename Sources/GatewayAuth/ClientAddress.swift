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
        return IPAddress(clientIP)?.rateLimitKey ?? clientIP
    }
}
