import Foundation

/// An IP address parsed into 16 bytes (IPv4 as IPv4-mapped IPv6), for comparisons and ranges.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(_ text: some StringProtocol) {
        // Addresses from sockets and headers seldom carry spaces: trim only when there are some
        // (Foundation's trimming is the costliest step of a per-request parse).
        let spaces: (UInt8?) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        var trimmed = String(text)
        if spaces(trimmed.utf8.first) || spaces(trimmed.utf8.last) { trimmed = trimmed.trimmingCharacters(in: .whitespaces) }
        if trimmed.hasPrefix("["), let close = trimmed.firstIndex(of: "]") {
            trimmed = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
        }
        // A zone (`fe80::1%eth0`) names an interface, not a different address.
        if let percent = trimmed.firstIndex(of: "%") { trimmed = String(trimmed[..<percent]) }
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, trimmed, &v4) == 1 {
            let value = UInt32(bigEndian: v4.s_addr)
            bytes = Array(repeating: 0, count: 10) + [0xFF, 0xFF] + [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) }
        } else if inet_pton(AF_INET6, trimmed, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    public var isIPv4: Bool { bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }

    /// IPv4 addresses as themselves, IPv6 ones by their /64 network: one IPv6 host commonly holds
    /// a whole /64, so per-address limits are kept per /64.
    public var rateLimitKey: String {
        if isIPv4 { return bytes[12...].map(String.init).joined(separator: ".") }
        return bytes[0..<8].map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined() + "::/64"
    }

    public var description: String {
        if isIPv4 { return bytes[12...].map(String.init).joined(separator: ".") }
        return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}

/// An address or CIDR range (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`).
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    public let network: IPAddress
    /// Prefix length over the 16-byte form (an IPv4 /8 is 96 + 8).
    public let prefixLength: Int
    public let description: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { return nil }
        let maximum = address.isIPv4 ? 32 : 128
        var length = maximum
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...maximum).contains(parsed) else { return nil }
            length = parsed
        }
        self.prefixLength = address.isIPv4 ? 96 + length : length
        self.network = address
        self.description = text
    }

    public func contains(_ address: IPAddress) -> Bool {
        var remaining = prefixLength
        for index in 0..<16 where remaining > 0 {
            let bits = min(8, remaining)
            let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if address.bytes[index] & mask != network.bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

extension IPAddress {
    /// Whether the gateway may connect to this address on someone else's say-so (a client's
    /// metadata document URL): not loopback, private (RFC 1918, RFC 4193), link-local, CGNAT,
    /// unspecified, multicast, broadcast or reserved, in any IPv6 spelling of those (IPv4-mapped,
    /// IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), and not through a local NAT64
    /// (`64:ff9b:1::/48`) or Teredo (`2001::/32`) tunnel whose far end cannot be checked.
    public var isPublicUnicast: Bool {
        if isIPv4 { return Self.isPublicV4(Array(bytes[12..<16])) }
        if bytes[0..<12].allSatisfy({ $0 == 0 }) {
            // ::, ::1 and the deprecated IPv4-compatible form ::a.b.c.d.
            return Self.isPublicV4(Array(bytes[12..<16])) && !(bytes[12] == 0 && bytes[13] == 0 && bytes[14] == 0)
        }
        if bytes[0..<12] == [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] { return Self.isPublicV4(Array(bytes[12..<16])) }
        if bytes[0] == 0x00, bytes[1] == 0x64, bytes[2] == 0xff, bytes[3] == 0x9b, bytes[4] == 0x00, bytes[5] == 0x01 { return false }
        if bytes[0] == 0x20, bytes[1] == 0x02 { return Self.isPublicV4(Array(bytes[2..<6])) }
        if bytes[0] == 0x20, bytes[1] == 0x01, bytes[2] == 0x00, bytes[3] == 0x00 { return false }
        if bytes[0] & 0xfe == 0xfc { return false }  // fc00::/7 unique local
        if bytes[0] == 0xfe, bytes[1] & 0xc0 == 0x80 { return false }  // fe80::/10 link-local
        if bytes[0] == 0xfe, bytes[1] & 0xc0 == 0xc0 { return false }  // fec0::/10 site-local (deprecated)
        if bytes[0] == 0xff { return false }  // multicast
        if bytes[0] == 0x01, bytes[1] == 0x00, bytes[2..<8].allSatisfy({ $0 == 0 }) { return false }  // 100::/64 discard
        return true
    }

    static func isPublicV4(_ b: [UInt8]) -> Bool {
        switch (b[0], b[1]) {
        case (0, _), (10, _), (127, _): return false
        case (169, 254): return false
        case (172, 16...31): return false
        case (192, 168): return false
        case (100, 64...127): return false
        case (192, 0) where b[2] == 0: return false  // 192.0.0.0/24 protocol assignments
        case (198, 18...19): return false  // benchmarking
        default: return b[0] < 224
        }
    }
}
