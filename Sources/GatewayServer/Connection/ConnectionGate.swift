import GatewayUpstream
import HummingbirdCore
import Logging
import NIOCore
import Synchronization

/// `limits.connections`: how many client connections the instance holds at once, across entry
/// points. A connection beyond is closed as soon as it is accepted, before a byte is read.
///
/// Why a cap at all: every connection is a file descriptor, and so is what it may pull behind it
/// (an upstream connection, a stream). A process that runs out of descriptors cannot accept, cannot
/// reach its upstreams, and the Swift runtime's own thread-pool monitor traps when it cannot open
/// `/proc` (measured: the gateway crashed at its descriptor limit while a flood of connections
/// opened; bench/results-connections.md). Refusing the connections beyond a known count keeps the
/// instance serving the ones it holds.
final class ConnectionGate: Sendable {
    let limit: Int
    private let state = Mutex(State())
    private let logger: Logger

    private struct State {
        var open = 0
        var refusedSinceReport = 0
        var lastReport: ContinuousClock.Instant?
    }

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    var open: Int { state.withLock { $0.open } }

    /// Takes a place for a new connection; false when the instance holds its limit.
    func admit() -> Bool {
        let (admitted, report) = state.withLock { state -> (Bool, Int?) in
            if state.open < limit {
                state.open += 1
                return (true, nil)
            }
            state.refusedSinceReport += 1
            // One warning per 10 s at most: a flood must not become a flood of log lines.
            let now = ContinuousClock.now
            guard state.lastReport.map({ now - $0 >= .seconds(10) }) ?? true else { return (false, nil) }
            state.lastReport = now
            defer { state.refusedSinceReport = 0 }
            return (false, state.refusedSinceReport)
        }
        if let report {
            logger.warning("connections refused: the instance holds its limit (limits.connections)", metadata: [
                "limit": "\(limit)", "refused": "\(report)",
            ])
        }
        return admitted
    }

    func release() {
        state.withLock { $0.open -= 1 }
    }

    /// The default when `limits.connections` is not set: half the descriptors the process may
    /// open, less a reserve for listeners, Redis, logs and stdio children, because each client
    /// connection may hold one upstream connection (a proxied stream) besides its own.
    static func defaultLimit(descriptorLimit: Int) -> Int {
        max(64, (descriptorLimit - 512) / 2)
    }
}

/// The first handler of every accepted connection: takes a place at the gate when the connection
/// becomes active and gives it back when it closes; a connection refused is closed at once. The
/// setup itself never fails for a refusal (a failed child setup is reported to the listener's
/// channel, which would stop accepting altogether).
final class ConnectionGateHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let gate: ConnectionGate
    private var admitted = false

    init(gate: ConnectionGate) {
        self.gate = gate
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { decide(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if decide(context) { context.fireChannelActive() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        leave()
    }

    /// Gives the place back, once, whichever of closing or removal comes first.
    private func leave() {
        guard admitted else { return }
        admitted = false
        gate.release()
    }

    /// True when the connection may go on.
    @discardableResult
    private func decide(_ context: ChannelHandlerContext) -> Bool {
        if admitted { return true }
        if gate.admit() {
            admitted = true
            return true
        }
        context.close(promise: nil)
        return false
    }
}

/// A server child channel whose connections pass the gate first.
struct GatedChildChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let gate: ConnectionGate

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            try channel.syncOptions?.setOption(.recvAllocator, value: ReceiveBuffers.allocator)
            try channel.pipeline.syncOperations.addHandler(ConnectionGateHandler(gate: gate), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
