import Foundation
import GatewayAudit
import Testing

@Suite struct AuditEventTests {
    @Test func aLineIsOneJSONObjectWithTimeAndEventFirstAndNoEmptyFields() throws {
        let event = AuditEvent("mcp.request", time: Date(timeIntervalSince1970: 1_796_390_996.5), [
            ("user", .string("al\"ice\n")), ("status", .integer(200)), ("tool", nil), ("arguments", .json(#"{"q":"x/y"}"#)),
        ])
        let line = event.line
        #expect(line.hasPrefix(#"{"time":"2026-12-04T13:29:56.500Z","event":"mcp.request","#))
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["user"] as? String == "al\"ice\n")
        #expect(object["status"] as? Int == 200)
        #expect(object["tool"] == nil)
        #expect((object["arguments"] as? [String: String]) == ["q": "x/y"])
    }

    @Test func aLineWrittenFieldByFieldIsTheSameAsTheEventsLine() throws {
        let time = Date(timeIntervalSince1970: 1_796_390_996.5)
        let event = AuditEvent("mcp.request", time: time, [
            ("trace_id", nil), ("router", .string("ro\\uter")), ("service", .string("svc")), ("user", .string("al\"ice\n")),
            ("status", .integer(200)), ("error_code", .integer(-32_601)), ("bytes_out", .integer(0)), ("big", .integer(.min)),
            ("arguments", .json(#"{"q":"x/y"}"#)),
        ])
        let out = AuditLineWriter.bytes { out in
            AuditLine.start("mcp.request", time: time, to: &out)
            AuditLine.field("trace_id", nil as String?, to: &out)
            AuditLine.encoded(AuditLine.fields([("router", "ro\\uter"), ("service", "svc")]), to: &out)
            AuditLine.field("user", "al\"ice\n", to: &out)
            AuditLine.field("status", 200, to: &out)
            AuditLine.field("error_code", -32_601, to: &out)
            AuditLine.field("bytes_out", 0, to: &out)
            AuditLine.field("big", Int64.min, to: &out)
            AuditLine.field("missing", nil as Int64?, to: &out)
            AuditLine.field("arguments", json: #"{"q":"x/y"}"#, to: &out)
            AuditLine.end(to: &out)
        }
        #expect(String(decoding: out, as: UTF8.self) == event.line)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        #expect(object["big"] as? Int64 == .min && object["error_code"] as? Int == -32_601 && object["router"] as? String == "ro\\uter")
    }

    @Test func aLineLongerThanTheStackBufferIsWrittenWhole() throws {
        // Full tool arguments can be far larger than the writer's stack buffer: the line moves to
        // an array at the first byte that does not fit, escapes and all.
        let long = String(repeating: "a\"b\\c\n", count: 2000)
        let arguments = "{\"text\":\(JSONText.quoted(long))}"
        let event = AuditEvent("mcp.request", time: Date(timeIntervalSince1970: 0), [("user", .string(long)), ("arguments", .json(arguments))])
        let bytes = event.bytes
        #expect(bytes.count > 4 * AuditLineWriter.stackCapacity)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(object["user"] as? String == long)
        #expect((object["arguments"] as? [String: String])?["text"] == long)
        #expect(bytes.last == UInt8(ascii: "\n") && bytes.filter { $0 == UInt8(ascii: "\n") }.count == 1)
        // Spilling in the middle of a piece keeps the bytes before it, once.
        let edge = AuditLineWriter.bytes { out in
            for _ in 0..<(AuditLineWriter.stackCapacity - 1) { out.append(UInt8(ascii: "x")) }
            out.append("yz")
            out.append(UInt8(ascii: "!"))
        }
        #expect(edge == Array(repeating: UInt8(ascii: "x"), count: AuditLineWriter.stackCapacity - 1) + Array("yz!".utf8))
    }

    @Test func redactionReplacesSensitiveKeysAtAnyDepthCaseInsensitively() throws {
        let raw = #"{"query":"weather","apiKey":"s1","nested":{"PASSWORD":"s2","list":[{"session_token":"s3","ok":1}]},"keyboard":"s4"}"#
        let redacted = try #require(AuditArguments.redacted(raw, keys: ["password", "token", "key"]))
        #expect(!redacted.contains("s1") && !redacted.contains("s2") && !redacted.contains("s3"))
        // Substring matching is what the operator asked for: "keyboard" contains "key".
        #expect(!redacted.contains("s4"))
        #expect(redacted.contains(#""query":"weather""#) && redacted.contains(#""ok":1"#))
        #expect(AuditArguments.redacted("not json", keys: ["key"]) == nil)
    }
}
