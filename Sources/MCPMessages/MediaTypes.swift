/// The two media types MCP's Streamable HTTP answers in, recognised in a `Content-Type` value
/// (any case, parameters after it) without a lowercased copy: this is asked of every response.
public enum MediaTypes {
    public static func isEventStream(_ contentType: String?) -> Bool {
        contentType.map { hasPrefixIgnoringCase($0, "text/event-stream") } ?? false
    }

    public static func isJSON(_ contentType: String?) -> Bool {
        contentType.map { hasPrefixIgnoringCase($0, "application/json") } ?? false
    }

    /// ASCII case-insensitive `hasPrefix`; `prefix` is lowercase.
    static func hasPrefixIgnoringCase(_ text: String, _ prefix: StaticString) -> Bool {
        let expected = UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
        // The contiguous bytes of a native string: its UTF-8 view's iterator costs ~40
        // instructions a byte, on every answer the audit and metrics read.
        if let matched = text.utf8.withContiguousStorageIfAvailable({ bytes in
            guard bytes.count >= expected.count else { return false }
            var index = 0
            while index < expected.count {
                guard Self.lowered(bytes[index]) == expected[index] else { return false }
                index &+= 1
            }
            return true
        }) {
            return matched
        }
        var characters = text.utf8.makeIterator()
        for byte in expected {
            guard let next = characters.next(), Self.lowered(next) == byte else { return false }
        }
        return true
    }

    private static func lowered(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}
