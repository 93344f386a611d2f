import Logging
import MCPMessages
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import GatewayStdio

/// A session's answers reach their readers after the session's lock is released: every reader
/// still gets its own answer, then the end, whichever thread the child answers on.
@Suite struct LegacySessionDeliveryTests {
    /// A child that answers every request it is sent, on one event loop (as a real child's
    /// output is read), with a progress notification first when the request asks for progress.
    final class AnsweringChild: MessagePeer, @unchecked Sendable {
        let loop: any EventLoop
        // Set once, right after the session is made, before any request.
        weak var session: LegacySession?
        let pid: Int32 = 0
        let exit: EventLoopFuture<ChildExit>
        var isRunning: Bool { true }

        init(loop: any EventLoop) {
            self.loop = loop
            // Only the session manager watches a child's exit; the session alone never does.
            self.exit = loop.makeSucceededFuture(.exited(0))
        }

        func send(_ message: ByteBuffer) {
            guard let parsed = try? JSONRPCMessage(parsing: message), let id = parsed.rawID else { return }
            let progress = parsed.paramsValue("_meta", "progressToken")
            loop.execute { [weak self] in
                guard let session = self?.session else { return }
                if let progress {
                    session.handleChildLine(ByteBuffer(string: #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":\#(progress),"progress":1}}"#))
                }
                session.handleChildLine(ByteBuffer(string: #"{"jsonrpc":"2.0","id":\#(id),"result":{"echo":\#(id)}}"#))
            }
        }

        func signal(_ signal: Int32) {}
        func terminate(grace: Duration) async -> ChildExit { .exited(0) }
    }

    static func session(on loop: any EventLoop) -> (LegacySession, AnsweringChild) {
        let child = AnsweringChild(loop: loop)
        let session = LegacySession(child: child, serviceName: "test", replayLimit: 100, logger: Logger(label: "test"))
        child.session = session
        return (session, child)
    }

    static func items(_ subscription: LegacySession.Subscription) async -> [StreamItem] {
        var items: [StreamItem] = []
        for await item in subscription.items { items.append(item) }
        return items
    }

    @Test func everyConcurrentRequestGetsItsOwnAnswerThenTheEnd() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (session, child) = Self.session(on: group.next())
        let results = try await withThrowingTaskGroup(of: (Int, [StreamItem]).self) { tasks in
            for index in 0..<200 {
                tasks.addTask {
                    let token = index.isMultiple(of: 3) ? #","params":{"_meta":{"progressToken":"p\#(index)"}}"# : ""
                    let request = try JSONRPCMessage(parsing: ByteBuffer(string: #"{"jsonrpc":"2.0","id":"c\#(index)","method":"tools/call"\#(token)}"#))
                    let subscription = try session.sendRequests([request], timeout: nil)
                    return (index, await Self.items(subscription))
                }
            }
            var results: [Int: [StreamItem]] = [:]
            for try await (index, items) in tasks { results[index] = items }
            return results
        }
        #expect(results.count == 200)
        for (index, items) in results {
            let messages = items.compactMap { item -> (String, Bool)? in
                guard case .message(_, let bytes, let final) = item else { return nil }
                return (String(buffer: bytes), final)
            }
            // Progress first (when asked for), then the answer with the client's own id, then the end.
            let expected = index.isMultiple(of: 3) ? 2 : 1
            #expect(messages.count == expected)
            #expect(messages.last?.1 == true)
            #expect(messages.last?.0.contains(#""id":"c\#(index)""#) == true)
            if expected == 2 { #expect(messages.first?.0.contains("notifications/progress") == true) }
            #expect(items.last == .end)
        }
        #expect(session.pendingCount == 0)
        _ = child
        try await group.shutdownGracefully()
    }

    @Test func aStreamWhoseReaderHadItsAnswerIsNotKeptForAResume() throws {
        var streams = SessionStreams(replayLimit: 100)
        let call = streams.open([SessionStreamsTests.message(#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#)], origin: nil)
        let answerOutputs = streams.childSent(SessionStreamsTests.message(#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
        let answer = try #require(answerOutputs)
        #expect(answer.suffix(2) == [.deliver(streamID: call.streamID, .end), .finishReader(streamID: call.streamID)])
        guard case .deliver(_, .message(let eventID, _, true))? = answer.first(where: { if case .deliver(_, .message) = $0 { true } else { false } }) else {
            Issue.record("expected the answer delivered")
            return
        }
        // Nothing buffered: the reader had every event, and its stopping has nothing to do.
        #expect(streams.replayCount == 0)
        #expect(streams.readerStopped(streamID: call.streamID, generation: 1).isEmpty)
        // Resuming after the answer finds no such stream: the session's GET stream instead.
        let resumed = try streams.attach(lastEventID: eventID)
        #expect(resumed.streamID != call.streamID)
        #expect(resumed.outputs == [.attachReader(streamID: resumed.streamID)])
    }
}
