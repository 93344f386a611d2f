package import HTTPTypes

/// The MCP header names the transports read and write.
package enum MCPHeaders {
    package static let sessionID = HTTPField.Name("Mcp-Session-Id")!
    package static let protocolVersion = HTTPField.Name("MCP-Protocol-Version")!
    package static let lastEventID = HTTPField.Name("Last-Event-ID")!
}

extension HTTPFields {
    /// The field's value as `self[name]` gives it (occurrences joined), without building a new
    /// string in the usual case of one occurrence: the subscript joins even a single value, and
    /// the request paths read a dozen fields per request.
    package func value(of name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            guard found == nil else { return self[name] }
            found = field.value
        }
        return found
    }

    /// Whether the field (any occurrence) lists `token`, compared without case (as in
    /// `Connection: keep-alive, Upgrade`). `token` is lowercase ASCII.
    package func lists(_ name: HTTPField.Name, token: String) -> Bool {
        for field in self where field.name == name {
            var matched = 0
            var inToken = true
            for byte in field.value.utf8 {
                switch byte {
                case UInt8(ascii: ","):
                    if inToken, matched == token.utf8.count { return true }
                    matched = 0
                    inToken = true
                case UInt8(ascii: " "), UInt8(ascii: "\t"):
                    // Spaces around an element; inside one they make it another token.
                    if matched > 0 { inToken = inToken && matched == token.utf8.count }
                default:
                    let lowered = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                    if inToken, matched < token.utf8.count, lowered == token.utf8[token.utf8.index(token.utf8.startIndex, offsetBy: matched)] {
                        matched += 1
                    } else {
                        inToken = false
                    }
                }
            }
            if inToken, matched == token.utf8.count { return true }
        }
        return false
    }
}
