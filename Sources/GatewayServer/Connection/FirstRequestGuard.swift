import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// HTTP/1.1 with WebSocket upgrades, with the connection defences kept for the first request.
/// The upgrade pipeline reads a connection's first request head itself, before the gateway's
/// per-request handlers (`HeaderDeadline`, the error answers) are added; without this guard a
/// slow or malformed first request would hold the connection open. `FirstRequestGuard` sits in
/// front of it until that head is complete: the header deadline, a size cap on the head, and a
/// close on a request the parser refuses (`ParseErrorCloser`, at the pipeline's end).
struct GuardedUpgradeChannel: ServerChildChannel {
    typealias Value = HTTP1UpgradeChannel.Value

    let base: HTTP1UpgradeChannel
    let headerTimeout: TimeAmount
    let maxHeadBytes: Int

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            try channel.pipeline.syncOperations.addHandler(FirstRequestGuard(timeout: headerTimeout, maxHeadBytes: maxHeadBytes), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            try channel.pipeline.syncOperations.addHandler(ParseErrorCloser())
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
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
