import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// HTTP/1.1 with WebSocket upgrades, with the connection defences kept for the first request.
/// The upgrade pipeline reads a connection's first request head itself, before the gateway's
/// per-request handlers (`HeaderDeadline`, the error answers) are added; without this guard a
/// slow or malformed first request would hold the connection open. `FirstRequestGuard` sits in
/// front of it until that head is complete: the header deadline, a size cap on the head, and a
/// close on a request the parser refuses (`ParseErrorCloser`, at the pipeline's end).
struct GuardedUpgradeChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let base: HTTP1UpgradeChannel.Value
        /// What the connection's task waits for before Hummingbird's handling (nil: no wait).
        let start: ConnectionTaskStart?
        var channel: any Channel { base.channel }
    }

    let base: HTTP1UpgradeChannel
    let headerTimeout: TimeAmount
    let maxHeadBytes: Int
    /// The entry point relays requests itself (`FastRelay`): the connection's task waits until the
    /// connection needs Hummingbird (see `ConnectionTaskStart`).
    var defersTask = false

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            try channel.pipeline.syncOperations.addHandler(FirstRequestGuard(timeout: headerTimeout, maxHeadBytes: maxHeadBytes), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger).flatMapThrowing { [defersTask] value in
            try channel.pipeline.syncOperations.addHandler(ParseErrorCloser())
            guard defersTask else { return Value(base: value, start: nil) }
            let start = ConnectionTaskStart(eventLoop: channel.eventLoop)
            do {
                try channel.pipeline.syncOperations.addHandler(ConnectionTaskStart.Holder(start))
            } catch {
                start.begin()
                throw error
            }
            return Value(base: value, start: start)
        }
    }

    func handle(value: Value, logger: Logger) async {
        if let start = value.start {
            await withTaskCancellationHandler {
                _ = try? await start.futureResult.get()
            } onCancel: {
                start.begin()
            }
        }
        await base.handle(value: value.base, logger: logger)
    }
}

/// When a connection's task may enter Hummingbird's HTTP handling. That task holds its frames
/// (~1 KiB task-allocator slabs: the upgrade channel's `handle`, `handleHTTP`, its cancellation
/// handler; 8 KiB or more in all) for as long as the connection lives, while a connection whose
/// requests the fast relay answers never gives it anything to do. So the task waits here, in one
/// small frame, until the connection needs it: a request handed to the full pipeline, a WebSocket
/// upgrade (or a failed one), an error, any event of the connection's, or its end.
///
/// Until the first request head the `Holder` (at the pipeline's end, where the upgrade pipeline's
/// events reach it) keeps it; `FastRelayInstaller` then hands it to the connection's `FastRelay`.
final class ConnectionTaskStart: Sendable {
    private let promise: EventLoopPromise<Void>
    private let begun = Atomic<Bool>(false)

    init(eventLoop: any EventLoop) {
        promise = eventLoop.makePromise(of: Void.self)
    }

    var futureResult: EventLoopFuture<Void> { promise.futureResult }

    /// Lets the task go on (once; later calls do nothing).
    func begin() {
        guard !begun.exchange(true, ordering: .acquiringAndReleasing) else { return }
        promise.succeed()
    }

    final class Holder: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny

        /// Nil once taken (by the fast relay) or begun.
        private var start: ConnectionTaskStart?

        init(_ start: ConnectionTaskStart) {
            self.start = start
        }

        /// For the connection's fast relay, which begins it when the connection needs the task.
        func take() -> ConnectionTaskStart? {
            defer { start = nil }
            return start
        }

        private func begin() {
            start?.begin()
            start = nil
        }

        /// The upgrade's outcome (`HTTPServerUpgradeEvents.upgradeComplete`), a half-close, a stop
        /// (not TLS's handshake: every TLS connection has one).
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is HTTPServerUpgradeEvents || event is ChannelEvent || event is ChannelShouldQuiesceEvent { begin() }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            begin()
            context.fireErrorCaught(error)
        }

        func channelInactive(context: ChannelHandlerContext) {
            begin()
            context.fireChannelInactive()
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            begin()
        }
    }
}

/// Raw bytes until the first request's head ends (`\r\n\r\n`): closes the connection when that
/// takes longer than the header deadline or more bytes than the head may have, then steps aside.
final class FirstRequestGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let maxHeadBytes: Int
    private var seen = 0
    /// The last bytes of what was read, for a terminator split across reads.
    private var tail: [UInt8] = []
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount, maxHeadBytes: Int) {
        self.timeout = timeout
        self.maxHeadBytes = maxHeadBytes
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    /// A graceful stop: a connection that has not sent a byte has nothing in flight and is closed
    /// at once (Hummingbird's state handler, which closes idle connections on a stop, comes only
    /// with the first request; without this the stop waited for the header deadline).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, seen == 0 {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let bytes = tail + Array(buffer.readableBytesView.prefix(maxHeadBytes + 4))
        let ended = Self.endOfHead(in: bytes)
        seen += buffer.readableBytes
        if discarding { return }
        if !ended, seen > maxHeadBytes {
            refuseOversizedHead(context)
            return
        }
        context.fireChannelRead(data)
        if ended {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } else {
            tail = Array(bytes.suffix(3))
        }
    }

    /// 431, then the rest of what the client sends is read and dropped until it closes (closing
    /// with unread bytes would reset the connection before the client reads the answer).
    private var discarding = false

    private func refuseOversizedHead(_ context: ChannelHandlerContext) {
        discarding = true
        timer?.cancel()
        let channel = context.channel
        let answer = ByteBuffer(string: "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in channel.close(mode: .output, promise: nil) }
        timer = context.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    static func endOfHead(in bytes: [UInt8]) -> Bool {
        guard bytes.count >= 4 else { return false }
        for index in 0...(bytes.count - 4) where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return true
        }
        return false
    }
}

/// After the upgrade pipeline's parser: a request it refuses (conflicting framing, a malformed
/// head) is answered 400 and the connection closed, as the gateway's own HTTP pipeline does.
final class ParseErrorCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        let head = HTTPResponseHead(version: .http1_1, status: .badRequest, headers: ["Connection": "close", "Content-Length": "0"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
