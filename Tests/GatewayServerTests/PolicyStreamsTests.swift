@testable import GatewayServer
import GatewayConfig
import GatewayPolicies
import HTTPTypes
import Hummingbird
import NIOCore
import Testing

/// The stream pieces of call policies, without I/O: SSE bodies cut only between whole events
/// (whatever the line endings and however the chunks fall), and list answers filtered in an SSE
/// body with the other events passed on.
@Suite struct PolicyStreamsTests {
    /// What `WholeEventsWriter` yields for `chunks`.
    static func cut(_ chunks: [String]) async throws -> [String] {
        let (stream, into) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        var writer = WholeEventsWriter(into: into)
        for chunk in chunks { try await writer.write(ByteBuffer(string: chunk)) }
        try await writer.finish(nil)
        var pieces: [String] = []
        for try await piece in stream { pieces.append(String(buffer: piece)) }
        return pieces
    }

    @Test func eventsAreCutOnlyAtTheirEndWhateverTheLineEndings() async throws {
        // Each write passes on every event it completes, and keeps the unfinished rest.
        #expect(try await Self.cut(["data: a\n", "\ndata: b\n\nda", "ta: c\n\n"]) == ["data: a\n\ndata: b\n\n", "data: c\n\n"])
        #expect(try await Self.cut(["id: 1\r\ndata: a\r\n\r\n: keep-alive\r\n\r\n"]) == ["id: 1\r\ndata: a\r\n\r\n: keep-alive\r\n\r\n"])
        // A CRLF blank line split after its CR: the LF follows on its own, never inside an event.
        #expect(try await Self.cut(["data: a\r\n\r", "\ndata: b\r\n\r\n"]) == ["data: a\r\n\r", "\ndata: b\r\n\r\n"])
        #expect(try await Self.cut(["data: a\r\rdata: b\r", "\r"]) == ["data: a\r\r", "data: b\r\r"])
        // An unfinished event is passed on when the body ends.
        #expect(try await Self.cut(["data: a\n\ndata: b"]) == ["data: a\n\n", "data: b"])
    }

    @Test func aListAnswerInAnEventStreamIsFilteredAndTheOtherEventsPass() async throws {
        let policy = CompiledCallPolicy(CallPolicy(rules: [.tools: .init(deny: ["secret_*"])]))
        let filtering = CallPolicyEnforcement.Filtering(
            view: policy.view(for: nil), listings: ["3": try #require(PolicedMethods.listing("tools/list"))], single: true, markPrivate: false
        )
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.contentLength] = "999"
        let body = #"""
        event: message
        data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"secret_tool"}}

        id: e1
        event: message
        data: {"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"secret_tool"},{"name":"open_tool"}]}}


        """#
        let response = CallPolicyEnforcement.filtered(Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body))), filtering, nextPage: nil)
        #expect(response.headers[.contentLength] == nil)
        let collector = CollectingWriter()
        try await response.body.write(collector)
        let text = String(buffer: collector.collected)
        #expect(text.contains(#""data":"secret_tool""#), "other events pass untouched")
        #expect(text.contains(#"id: e1"#) && text.contains(#"{"tools":[{"name":"open_tool"}]}"#))
        #expect(!text.contains(#"{"name":"secret_tool"}"#))
    }
}
