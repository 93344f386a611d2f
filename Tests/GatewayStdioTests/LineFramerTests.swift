@testable import GatewayStdio
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

/// A child's stdout framed into lines: on `\n` only, CRLF tolerated, oversized lines dropped whole
/// (and reported) without losing the framing, however the bytes are chunked.
@Suite struct LineFramerTests {
    func line(_ text: String) -> LineFramer.LineEvent { .line(ByteBuffer(string: text)) }

    @Test func framesWhateverTheChunking() throws {
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [
                (ByteBuffer(string: "{\"a\":1}\n"), [line("{\"a\":1}")]),
                (ByteBuffer(string: "one\r\ntwo\n"), [line("one"), line("two")]),
                // U+2028 inside a JSON string is not a line break.
                (ByteBuffer(string: "{\"t\":\"a\u{2028}b\"}\n"), [line("{\"t\":\"a\u{2028}b\"}")]),
                (ByteBuffer(string: "\n"), [line("")]),
            ],
            decoderFactory: { LineFramer(maxLength: 64) }
        )
    }

    @Test func oversizedLinesAreDroppedWholeAndTheNextLineSurvives() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFramer(maxLength: 8)))
        try channel.writeInbound(ByteBuffer(string: String(repeating: "x", count: 5)))
        try channel.writeInbound(ByteBuffer(string: String(repeating: "x", count: 10)))
        try channel.writeInbound(ByteBuffer(string: "xx\nok\n"))
        #expect(try channel.readInbound(as: LineFramer.LineEvent.self) == .oversized(bytes: 17))
        #expect(try channel.readInbound(as: LineFramer.LineEvent.self) == line("ok"))
        #expect(try channel.readInbound(as: LineFramer.LineEvent.self) == nil)
        _ = try channel.finish()
    }
}
