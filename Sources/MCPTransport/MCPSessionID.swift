import GatewayAuth

/// Session ids the gateway hands to clients (stdio sessions, bridged sessions): ≥128 bits from the
/// system CSPRNG, as 32 lowercase hex characters (visible ASCII, as the transport requires).
package enum MCPSessionID {
    package static func mint() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return hex(high) + hex(low)
    }

    /// How logs name a session: the first 16 hex digits of its id's SHA-256, as the audit log and
    /// traces do (the id itself lets whoever reads it use the session as its owner's client).
    package static func logged(_ sessionID: String?) -> String {
        guard let sessionID else { return "none" }
        return String(SessionBindings.hash(sessionID).prefix(16))
    }

    private static func hex(_ value: UInt64) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: 16 - text.count) + text
    }
}
