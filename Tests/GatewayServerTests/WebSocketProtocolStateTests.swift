import NIOCore
import NIOWebSocket
import Testing

@testable import GatewayServer

/// What a WebSocket session does with each frame, keep-alive tick and close, without a socket.
@Suite struct WebSocketProtocolStateTests {
    private func frame(_ opcode: WebSocketOpcode, _ text: String = "", fin: Bool = true, masked: Bool = true) -> WebSocketFrame {
        var data = ByteBuffer(string: text)
        // Clients mask what they send (RFC 6455 §5.3); the state reads the unmasked payload.
        let key: WebSocketMaskingKey? = masked ? WebSocketMaskingKey([0x12, 0x34, 0x56, 0x78]) : nil
        if let key { data.webSocketMask(key) }
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: key, data: data)
    }

    private func closeFrame(_ code: WebSocketErrorCode) -> WebSocketFrame {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        return WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
    }

    @Test func aMessageInOneFrameIsDeliveredUnmasked() {
        var state = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(state.read(frame(.text, #"{"id":1}"#)) == .deliver(ByteBuffer(string: #"{"id":1}"#)))
        #expect(state.read(frame(.binary, "[]", masked: false)) == .deliver(ByteBuffer(string: "[]")))
    }

    @Test func fragmentsAreJoinedAndPingsAnsweredBetweenThem() {
        var state = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(state.read(frame(.text, #"{"id""#, fin: false)) == WebSocketProtocolState.Action.none)
        // A control frame may come between a message's fragments (§5.4).
        #expect(state.read(frame(.ping, "p")) == .pong(ByteBuffer(string: "p")))
        #expect(state.read(frame(.continuation, ":", fin: false)) == WebSocketProtocolState.Action.none)
        #expect(state.read(frame(.continuation, "2}")) == .deliver(ByteBuffer(string: #"{"id":2}"#)))
    }

    @Test func aMessageBeyondTheLimitCloses1009WhetherWholeOrInFragments() {
        var whole = WebSocketProtocolState(maxMessageBytes: 4)
        #expect(whole.read(frame(.text, "12345")) == .close(.messageTooLarge))
        var fragmented = WebSocketProtocolState(maxMessageBytes: 4)
        #expect(fragmented.read(frame(.text, "123", fin: false)) == WebSocketProtocolState.Action.none)
        #expect(fragmented.read(frame(.continuation, "45")) == .close(.messageTooLarge))
        // Closing: nothing more is delivered.
        #expect(fragmented.read(frame(.text, "1")) == WebSocketProtocolState.Action.none)
        #expect(fragmented.closing)
    }

    @Test func framesOutOfOrderClose1002() {
        var stray = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(stray.read(frame(.continuation, "x")) == .close(.protocolError))
        var interleaved = WebSocketProtocolState(maxMessageBytes: 100)
        _ = interleaved.read(frame(.text, "a", fin: false))
        #expect(interleaved.read(frame(.text, "b")) == .close(.protocolError))
    }

    @Test func thePeersCloseIsAnsweredWithItsCodeAndTheAnswerToOursClosesTheConnection() {
        var peerFirst = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(peerFirst.read(closeFrame(.normalClosure)) == .close(.normalClosure))
        var empty = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(empty.read(frame(.connectionClose)) == .close(.normalClosure))
        var oursFirst = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(oursFirst.close(.goingAway) == .close(.goingAway))
        #expect(oursFirst.close(.goingAway) == WebSocketProtocolState.Action.none)  // once
        #expect(oursFirst.read(frame(.ping, "p")) == WebSocketProtocolState.Action.none)
        #expect(oursFirst.read(closeFrame(.goingAway)) == .closeConnection)
    }

    @Test func aPeerThatMissesAKeepAlivePingIsClosed1001() {
        var state = WebSocketProtocolState(maxMessageBytes: 100)
        #expect(state.keepAliveTick() == .ping)
        #expect(state.read(frame(.pong)) == WebSocketProtocolState.Action.none)
        #expect(state.keepAliveTick() == .ping)
        // No pong by the next tick.
        #expect(state.keepAliveTick() == .close(.goingAway))
        #expect(state.keepAliveTick() == WebSocketProtocolState.Action.none)
    }
}
