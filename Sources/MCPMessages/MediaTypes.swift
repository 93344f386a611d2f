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
        var characters = text.utf8.makeIterator()
        let expected = UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
        for byte in expected {
            guard let next = characters.next() else { return false }
            let lowered = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(next) ? next + 32 : next
            guard lowered == byte else { return false }
        }
        return true
    }
}
