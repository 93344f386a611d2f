import MCPMessages
import NIOCore
import NIOTestUtils
import Testing

/// The byte-level SSE decoder: however the stream is chunked, the same events come out whole.
@Suite struct SSEDecoderTests {
    func event(_ data: String, id: String? = nil, event: String? = nil) -> SSEEvent {
        SSEEvent(id: id, event: event, data: ByteBuffer(string: data))
    }

    @Test func decodesEventsWhateverTheChunking() throws {
        // The verifier feeds each input byte by byte, in halves, whole, and in random pieces.
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [
                (ByteBuffer(string: "data: {\"a\":1}\n\n"), [event("{\"a\":1}")]),
                (ByteBuffer(string: "event: message\r\ndata: é→😀\r\n\r\n"), [event("é→😀", event: "message")]),
                (ByteBuffer(string: ": keep-alive\n\ndata:x\rdata: y\r\r"), [event("x\ny")]),
                (ByteBuffer(string: "data\n\nretry: 10\nunknown: z\ndata:  two spaces\n\n"), [event(""), event(" two spaces")]),
            ],
            decoderFactory: { SSEDecoder() }
        )
    }

    @Test func aMultiByteCharacterSplitAcrossChunksArrivesWhole() throws {
        var decoder = SSEDecoder()
        let bytes = Array("id: 7\ndata: {\"text\":\"日本語\"}\n\n".utf8)
        var buffer = ByteBuffer()
        var events: [SSEEvent] = []
        for byte in bytes {
            buffer.writeInteger(byte)
            while let decoded = try decoder.decode(buffer: &buffer) { events.append(decoded) }
        }
        #expect(events.count == 1)
        #expect(String(buffer: events[0].data) == "{\"text\":\"日本語\"}" && events[0].id == "7")
    }

    @Test func aHugeEventIsLinearAndBounded() throws {
        var decoder = SSEDecoder(maxEventBytes: 1 << 20)
        var buffer = ByteBuffer(string: "data: ")
        let chunk = String(repeating: "x", count: 4096)
        // 512 KiB in 4 KiB chunks: each byte is looked at once (a rescan per chunk would be
        // 32 million comparisons; this finishes in milliseconds either way, the bound is below).
        for _ in 0..<128 {
            buffer.writeString(chunk)
            #expect(try decoder.decode(buffer: &buffer) == nil)
        }
        buffer.writeString("\n\n")
        let decoded = try #require(try decoder.decode(buffer: &buffer))
        #expect(decoded.data.readableBytes == 128 * 4096)
        var tooBig = SSEDecoder(maxEventBytes: 1024)
        var big = ByteBuffer(string: "data: " + String(repeating: "y", count: 2048))
        #expect(throws: SSEDecoder.EventTooLarge.self) { try tooBig.decode(buffer: &big) }
    }

    @Test func anUnfinishedEventAtTheEndIsDropped() throws {
        var decoder = SSEDecoder()
        var buffer = ByteBuffer(string: "data: complete\n\ndata: cut off")
        #expect(try decoder.decode(buffer: &buffer) == event("complete"))
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == nil)
    }
}
