import GatewayStdio
import MCPMessages
import NIOCore
import Testing

/// A session's requests, streams and replay buffer on values: no child, no reader.
@Suite struct SessionStreamsTests {
    typealias Output = SessionStreams.Output

    static func message(_ text: String) -> JSONRPCMessage {
        (try? JSONRPCMessage(parsing: text)) ?? { fatalError("bad test message") }()
    }

    static func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

    static func delivered(_ outputs: [Output]?) -> [String] {
        (outputs ?? []).compactMap { output in
            if case .deliver(_, .message(_, let bytes, _)) = output { return text(bytes) }
            return nil
        }
    }

    @Test func idsAreTheGatewaysOnTheWayInAndTheClientsOnTheWayOut() throws {
        var streams = SessionStreams(replayLimit: 100)
        let (streamID, lines, outputs) = streams.open([Self.message(#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#)], origin: nil)
        #expect(outputs == [.attachReader(streamID: streamID)])
        let sent = try JSONRPCMessage(parsing: try #require(lines.first))
        #expect(sent.rawID == "1")
        // A response with an id nobody asked for is dropped.
        let unknown = streams.childSent(Self.message(#"{"jsonrpc":"2.0","id":99,"result":{}}"#))
        #expect(unknown == nil)
        let answerOutputs = streams.childSent(Self.message(#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#))
        let answer = try #require(answerOutputs)
        #expect(Self.delivered(answer).first?.contains(#""id":"a""#) == true)
        // The stream's only request is answered: the reader gets the end, the timer goes.
        #expect(answer.contains(.deliver(streamID: streamID, .end)))
        #expect(answer.contains(.finishReader(streamID: streamID)))
        #expect(answer.contains(.cancelTimer(streamID: streamID)))
        #expect(streams.pendingCount == 0)
    }

    @Test func progressFollowsItsTokenAndChangeNotificationsTheGETStream() throws {
        var streams = SessionStreams(replayLimit: 100)
        let first = streams.open([Self.message(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"p1"}}}"#)], origin: nil)
        let second = streams.open([Self.message(#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}"#)], origin: nil)
        let progressOutputs = streams.childSent(Self.message(#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":1}}"#))
        let progress = try #require(progressOutputs)
        #expect(progress.contains { if case .deliver(first.streamID, _) = $0 { true } else { false } })
        // A log message goes to the newest request in flight.
        let logOutputs = streams.childSent(Self.message(#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info"}}"#))
        let log = try #require(logOutputs)
        #expect(log.contains { if case .deliver(second.streamID, _) = $0 { true } else { false } })
        // With a GET reader attached, a list change goes there.
        let get = try streams.attach(lastEventID: nil)
        #expect(get.outputs == [.attachReader(streamID: get.streamID)])
        let changeOutputs = streams.childSent(Self.message(#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#))
        let change = try #require(changeOutputs)
        #expect(change.contains { if case .deliver(get.streamID, _) = $0 { true } else { false } })
        // A second GET reader is refused while the first reads.
        #expect(throws: SessionStreams.AttachFailure.alreadyAttached) { try streams.attach(lastEventID: nil) }
    }

    @Test func aBrokenStreamResumesAfterItsLastEvent() throws {
        var streams = SessionStreams(replayLimit: 100)
        let call = streams.open([Self.message(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}"#)], origin: nil)
        let oneOutputs = streams.childSent(Self.message(#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#))
        let one = try #require(oneOutputs)
        guard case .deliver(_, .message(let firstEventID, _, _))? = one.first else {
            Issue.record("expected a delivery")
            return
        }
        // The client goes away; what follows is buffered.
        let stopped = streams.readerStopped(streamID: call.streamID, generation: 1)
        #expect(stopped == [.finishReader(streamID: call.streamID)])
        let bufferedOutputs = streams.childSent(Self.message(#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":2}}"#))
        let buffered = try #require(bufferedOutputs)
        #expect(Self.delivered(buffered).isEmpty)
        _ = streams.childSent(Self.message(#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
        // Resumed after the first event: the second and the answer, then the end.
        let resumed = try streams.attach(lastEventID: firstEventID)
        #expect(resumed.streamID == call.streamID)
        let replay = Self.delivered(resumed.outputs)
        #expect(replay.count == 2)
        #expect(replay[0].contains(#""progress":2"#))
        #expect(replay[1].contains(#""result""#))
        #expect(resumed.outputs.suffix(2) == [.deliver(streamID: call.streamID, .end), .finishReader(streamID: call.streamID)])
        // An old reader stopping does not touch the newer one's stream.
        let staleStop = streams.readerStopped(streamID: call.streamID, generation: 1)
        #expect(staleStop.isEmpty)
    }

    @Test func theReplayBufferIsBounded() {
        var streams = SessionStreams(replayLimit: 3)
        _ = streams.open([Self.message(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}"#)], origin: nil)
        for step in 0..<10 {
            _ = streams.childSent(Self.message("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"t\",\"progress\":\(step)}}"))
        }
        #expect(streams.replayCount == 3)
    }

    @Test func cancellationsReachOnlyTheSendersPendingRequests() {
        var streams = SessionStreams(replayLimit: 100)
        let alice = streams.open([Self.message(#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#)], origin: "alice")
        _ = streams.open([Self.message(#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#)], origin: "bob")
        #expect(streams.gatewayID(ofClientRequest: "7", origin: "alice") == 1)
        #expect(streams.gatewayID(ofClientRequest: "7", origin: "bob") == 2)
        #expect(streams.gatewayID(ofClientRequest: "7", origin: "mallory") == nil)
        let (cancelled, outputs) = streams.cancel(streamID: alice.streamID)
        #expect(cancelled == [1])
        #expect(outputs.contains(.finishReader(streamID: alice.streamID)))
        #expect(streams.pendingCount == 1)
        // Once answered, nothing is left to cancel.
        let again = streams.cancel(streamID: alice.streamID)
        #expect(again.cancelled.isEmpty)
    }

    @Test func aTimedOutOrClosedSessionAnswersEveryPendingRequest() {
        var streams = SessionStreams(replayLimit: 100)
        let call = streams.open([Self.message(#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{}}"#), Self.message(#"{"jsonrpc":"2.0","id":"y","method":"ping"}"#)], origin: nil)
        let timedOut = streams.answer(1) { ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\($0),\"error\":{\"code\":-32603,\"message\":\"timeout\"}}") }
        #expect(Self.delivered(timedOut).first?.contains(#""id":"x""#) == true)
        let twice = streams.answer(1) { _ in ByteBuffer() }
        #expect(twice == nil)
        let closed = streams.close { ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\($0),\"error\":{\"code\":-32603,\"message\":\"ended\"}}") }
        #expect(Self.delivered(closed).first?.contains(#""id":"y""#) == true)
        #expect(closed.suffix(2) == [.deliver(streamID: call.streamID, .end), .finishReader(streamID: call.streamID)])
        #expect(streams.pendingCount == 0)
    }
}
