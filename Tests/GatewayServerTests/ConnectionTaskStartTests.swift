import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import GatewayServer

/// A connection's task waits at `ConnectionTaskStart` until the connection needs it; the holder
/// must let it go on everything Hummingbird's task has to see (the upgrade's outcome, an error, a
/// half-close, a stop, the connection's end), and on nothing a relayed request brings.
@Suite struct ConnectionTaskStartTests {
    private struct OtherEvent {}

    private final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    /// A channel with the holder at its end, its start, and whether the start has begun.
    private func holding() throws -> (EmbeddedChannel, ConnectionTaskStart, () -> Bool) {
        let channel = EmbeddedChannel()
        let start = ConnectionTaskStart(eventLoop: channel.embeddedEventLoop)
        try channel.pipeline.syncOperations.addHandler(ConnectionTaskStart.Holder(start))
        let done = Flag()
        start.futureResult.whenSuccess { done.set() }
        let begun = { channel.embeddedEventLoop.run(); return done.isSet }
        return (channel, start, begun)
    }

    @Test func requestsAndOtherEventsPassWithoutStartingTheTask() throws {
        let (channel, _, begun) = try holding()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp")))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        channel.pipeline.fireUserInboundEventTriggered(OtherEvent())  // e.g. TLS's handshake
        #expect(!begun())
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) != nil)
        _ = try channel.finish()
        #expect(begun())  // the connection's end
    }

    @Test(arguments: [
        "upgrade", "inputClosed", "quiesce", "error", "inactive", "removed",
    ])
    func whatHummingbirdsTaskMustSeeStartsIt(_ event: String) throws {
        let (channel, _, begun) = try holding()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(!begun())
        switch event {
        case "upgrade":
            channel.pipeline.fireUserInboundEventTriggered(
                HTTPServerUpgradeEvents.upgradeComplete(toProtocol: "websocket", upgradeRequest: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"))
            )
        case "inputClosed": channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        case "quiesce": channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        case "error": channel.pipeline.fireErrorCaught(ChannelError.ioOnClosedChannel)
        case "inactive": channel.pipeline.fireChannelInactive()
        default:
            let holder = try channel.pipeline.syncOperations.handler(type: ConnectionTaskStart.Holder.self)
            try channel.pipeline.syncOperations.removeHandler(holder).wait()
        }
        #expect(begun())
        _ = try? channel.finish()
    }

    @Test func aTakenStartIsTheTakersToBegin() throws {
        let (channel, start, begun) = try holding()
        let holder = try channel.pipeline.syncOperations.handler(type: ConnectionTaskStart.Holder.self)
        #expect(holder.take() === start)
        #expect(holder.take() == nil)
        // Gone from the pipeline, the holder no longer begins it: the relay will.
        try channel.pipeline.syncOperations.removeHandler(holder).wait()
        #expect(!begun())
        start.begin()
        start.begin()  // once only: a second call does nothing
        #expect(begun())
        _ = try? channel.finish()
    }
}
