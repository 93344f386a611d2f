import Foundation
import GatewayAudit
import Logging
import Testing

/// The JSON log format's pieces: string escaping, nested metadata, the timestamp.
@Suite struct JSONLogHandlerTests {
    @Test func stringsAreEscapedAsJSONRequires() throws {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{07} slash / é"
        let quoted = JSONText.quoted(text)
        // What a JSON parser reads back is the original text.
        let decoded = try JSONSerialization.jsonObject(with: Data("[\(quoted)]".utf8)) as? [String]
        #expect(decoded == [text])
        #expect(quoted.contains("\\u0007") && !quoted.contains("\\/"))
    }

    /// Plain text is checked eight bytes at a time: a character JSON escapes is found at every
    /// position of a word and of the tail, and bytes at or above 0x80 (UTF-8) or just above the
    /// escaped ones are not mistaken for them.
    @Test func everyEscapedCharacterIsFoundWhereverItIs() throws {
        let escaped: [Character] = ["\"", "\\", "\n", "\u{00}", "\u{01}", "\u{1F}", "\t"]
        let plain: [Character] = [" ", "!", "#", "[", "]", "]", "\u{7F}", "é", "€", "😀", "A"]
        for length in 0..<20 {
            for position in 0...length {
                for special in escaped + plain {
                    var text = String(repeating: "a", count: position)
                    text.append(special)
                    text += String(repeating: "b", count: length - position)
                    let quoted = JSONText.quoted(text)
                    let decoded = try JSONSerialization.jsonObject(with: Data("[\(quoted)]".utf8)) as? [String]
                    #expect(decoded == [text], "\(text.debugDescription)")
                    // Plain text is copied as it is, between quotes.
                    if plain.contains(special) { #expect(quoted == "\"\(text)\"") }
                }
            }
        }
    }

    @Test func nestedMetadataBecomesObjectsAndArrays() throws {
        let value: Logger.Metadata.Value = ["list": ["a", "b"], "count": "\(3)", "inner": ["k": "v"]]
        let object = try JSONSerialization.jsonObject(with: Data(JSONLogHandler.json(value).utf8)) as? [String: Any]
        #expect(object?["list"] as? [String] == ["a", "b"])
        #expect(object?["count"] as? String == "3")
        #expect((object?["inner"] as? [String: String]) == ["k": "v"])
    }

    @Test func timestampsAreRFC3339WithMillisecondsInUTC() {
        #expect(JSONText.timestamp(Date(timeIntervalSince1970: 1_796_390_996.123)) == "2026-12-04T13:29:56.123Z")
        #expect(JSONText.timestamp(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
    }

    /// The date is computed from the day number, not by the C library: it must agree with
    /// `gmtime_r` on leap days, year and century ends, and instants before 1970.
    @Test func timestampsAgreeWithTheCLibrary() {
        var instants: [Int64] = [
            -1, -86_400_001, 951_782_399_999, 951_782_400_000, 951_868_800_000, 4_107_542_399_999, 4_107_542_400_000,
            1_709_164_800_000, 1_735_689_599_999, 253_402_300_799_999, -2_208_988_800_000,
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 { instants.append(Int64.random(in: -2_208_988_800_000...253_402_300_799_999, using: &generator)) }
        for millis in instants {
            var whole = time_t((millis - (millis % 1000 + 1000) % 1000) / 1000)
            var parts = tm()
            gmtime_r(&whole, &parts)
            let expected = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                                  Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int((millis % 1000 + 1000) % 1000))
            #expect(JSONText.timestamp(Date(timeIntervalSince1970: Double(millis) / 1000)) == expected, "\(millis)")
        }
    }
}
