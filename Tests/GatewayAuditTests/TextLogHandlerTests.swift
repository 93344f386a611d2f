import GatewayAudit
import Logging
import Synchronization
import Testing

/// A stream that keeps what is written (the handlers under test write lines to it).
final class CapturedStream: TextOutputStream, @unchecked Sendable {
    private let lines = Mutex<[String]>([])
    func write(_ string: String) { lines.withLock { $0.append(string) } }
    var written: [String] { lines.withLock { $0 } }
}

/// `log.format: text` writes what swift-log's StreamLogHandler writes; only when the metadata
/// is formatted differs.
@Suite struct TextLogHandlerTests {
    /// A line without its timestamp (the first field).
    private func withoutTime(_ line: String) -> Substring {
        line.drop { $0 != " " }
    }

    @Test func linesAreThoseOfTheStreamHandlerWithTheLoggersAndTheLinesMetadata() throws {
        let expected = CapturedStream(), actual = CapturedStream()
        var reference = Logger(label: "mcp-gateway") { label in StreamLogHandler(label: label, stream: expected) }
        var text = Logger(label: "mcp-gateway") { label in TextLogHandler(StreamLogHandler(label: label, stream: actual)) }
        reference[metadataKey: "entryPoint"] = "web"
        reference[metadataKey: "router"] = "kit"
        text[metadataKey: "entryPoint"] = "web"
        text[metadataKey: "router"] = "kit"
        reference.info("request", metadata: ["status": "200", "router": "line-wins"])
        text.info("request", metadata: ["status": "200", "router": "line-wins"])
        reference.debug("not written at info")
        text.debug("not written at info")
        text[metadataKey: "router"] = nil
        reference[metadataKey: "router"] = nil
        reference.warning("plain")
        text.warning("plain")
        #expect(expected.written.count == 2 && actual.written.count == 2)
        #expect(expected.written.map(withoutTime) == actual.written.map(withoutTime))
        #expect(actual.written[0].contains("router=line-wins") && actual.written[0].contains("entryPoint=web"))
        #expect(!actual.written[1].contains("router="))
    }
}
