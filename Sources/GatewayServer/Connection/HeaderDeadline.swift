import GatewayStdio
import GatewayUpstream
import MCPTransport
import NIOCore
import NIOHTTPTypes

/// Closes a connection whose request head does not arrive in time: from the first byte of a
/// request until its complete head, at most `timeout` (a slow-header, "slowloris", client holds a
/// connection for as long as the server waits). Idle connections between requests are Hummingbird's
/// `idleTimeout`'s business.
///
/// The HTTP decoder sees partial heads but reports only whole ones, so a small handler at the
/// front of the pipeline notices the first raw bytes of a request and arms the deadline; this
/// handler, after the decoder, disarms it when the head is complete.
final class HeaderDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let timeout: TimeAmount
    /// A request's head has arrived and its body is not finished yet.
    private var inRequest = false
    /// When the first byte of the head now awaited arrived (nil: none awaited).
    private var headStarted: NIODeadline?
    /// At most one timer per connection, re-armed from its own firing: a kept-alive connection
    /// serving many requests does not schedule and cancel a task per request.
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Not Sendable, and need not be: both handlers live on the channel's event loop.
        try? context.pipeline.syncOperations.addHandler(RawBytes(owner: self), position: .first)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            inRequest = true
            headStarted = nil
        case .body:
            break
        case .end:
            inRequest = false
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    /// Bytes arrived from the client: the start of a head, unless a request is being read.
    fileprivate func bytesArrived(_ context: ChannelHandlerContext) {
        guard !inRequest, headStarted == nil else { return }
        headStarted = .now()
        if timer == nil { arm(context, in: timeout) }
    }

    private func arm(_ context: ChannelHandlerContext, in delay: TimeAmount) {
        let channel = context.channel
        timer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: delay) { [self] in
            timer = nil
            // Nothing awaited: the timer lapses until the next head starts.
            guard let started = headStarted else { return }
            let waited = NIODeadline.now() - started
            if waited >= timeout {
                channel.close(promise: nil)
            } else {
                arm(context, in: timeout - waited)
            }
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
        headStarted = nil
    }

    private final class RawBytes: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        private let owner: HeaderDeadline

        init(owner: HeaderDeadline) {
            self.owner = owner
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            owner.bytesArrived(context)
            context.fireChannelRead(data)
        }
    }
}
