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
}
