/// Eight bytes of a JSON string's body at a time: the scanners skip words that cannot end the
/// string, start an escape or be invalid in it, instead of looking at each byte (a tool's answer
/// is mostly long strings, often JSON text escaped inside one), and the audit log's writer finds
/// the values it must escape.
public enum JSONBytes {
    @usableFromInline static let ones: UInt64 = 0x0101_0101_0101_0101
    @usableFromInline static let highs: UInt64 = 0x8080_8080_8080_8080

    /// Whether no byte of `word` is `"`, `\` or below 0x20 (bytes of 0x80 and up may be there).
    ///
    /// A byte equal to `"` or `\` (their XOR is zero there) or below 0x20 sets its high bit in
    /// one of these: the classic "has a zero byte" test, exact as a yes or no. A byte of 0x80 and
    /// up never sets it, as `~word` clears its high bit.
    @inlinable public static func isPlain(_ word: UInt64) -> Bool {
        let control = (word &- ones &* 0x20) & ~word & highs
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let found = control | ((quote &- ones) & ~quote & highs) | ((backslash &- ones) & ~backslash & highs)
        return found == 0
    }

    /// `isPlain`, and every byte ASCII (below 0x80): nothing in it a UTF-8 check has to look at.
    @inlinable public static func isPlainASCII(_ word: UInt64) -> Bool {
        word & highs == 0 && isPlain(word)
    }

    /// The eight bytes at `offset` as one word (the buffer's order; the tests are per byte).
    @inlinable public static func word(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt64 {
        bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
    }
}
