package import NIOCore
import Synchronization

/// Notices a client hanging up while its request is still being answered. Hummingbird keeps
/// HTTP/1 connections half-closable, so a client's FIN arrives as `inputClosed` (the channel stays
/// open); an RST as the channel going inactive. One watcher per connection.
package final class InboundCloseWatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    package typealias InboundIn = NIOAny

    private let closed = OneShotSignal()

    package init() {}
    private static let registry = Mutex<[ObjectIdentifier: InboundCloseWatcher]>([:])

    /// The watcher of `channel`, if the connection has one.
    package static func watcher(for channel: any Channel) -> InboundCloseWatcher? {
        registry.withLock { $0[ObjectIdentifier(channel)] }
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        let id = ObjectIdentifier(context.channel)
        Self.registry.withLock { $0[id] = self }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        let id = ObjectIdentifier(context.channel)
        Self.registry.withLock { if $0[id] === self { $0[id] = nil } }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { fire() }
        context.fireUserInboundEventTriggered(event)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        fire()
        let id = ObjectIdentifier(context.channel)
        Self.registry.withLock { if $0[id] === self { $0[id] = nil } }
        context.fireChannelInactive()
    }

    /// Calls `callback` once when the client hangs up (at once if it already has). Returns a token
    /// for ``cancel(_:)``.
    package func onClose(_ callback: @escaping @Sendable () -> Void) -> Int? {
        closed.onFire(callback)
    }

    package func cancel(_ token: Int?) {
        closed.cancel(token)
    }

    private func fire() {
        closed.fire()
    }
}
