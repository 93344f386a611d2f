import CHiredis
import GatewayStore
import NIOCore
import NIOPosix

/// A Redis connection that lives on one event loop, for the store call a request makes on the
/// fast relay (a rate limit): the command is written on the loop that carries the request and the
/// reply is read there, with no hand-off to another thread and back (the hiredis connections run
/// every command through a thread of their own, which costs a wake-up on each side). Commands
/// sent in one pass of the loop go out in one write; replies match commands in order (Redis
/// answers a connection's commands in the order sent) and are parsed by hiredis's reader.
///
/// Every member is touched on `loop` only. A failed connection is dropped; while it cannot be
/// re-established commands fail at once with `unavailable` (backoff 50 ms doubling to 2 s), as the
/// hiredis connections do.
final class RedisLoopConnection: @unchecked Sendable {
    typealias Reply = (Result<RedisValue, StoreError>) -> Void

    private enum State {
        /// No connection: the next command opens one.
        case idle
        /// Connecting: commands wait, and are written once connected.
        case connecting([(ByteBuffer, Reply)])
        case ready(any Channel, RedisReplyHandler)
        /// The last attempt failed: commands fail at once until then.
        case waiting(until: NIODeadline)
    }

    let loop: any EventLoop
    private let endpoint: RedisEndpoint
    private let timeout: Duration
    /// The backoff's clock (tests move it on instead of waiting).
    private let now: @Sendable () -> NIODeadline
    private var state = State.idle
    private var failures = 0
    private var flushScheduled = false

    init(loop: any EventLoop, endpoint: RedisEndpoint, timeout: Duration, now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.loop = loop
        self.endpoint = endpoint
        self.timeout = timeout
        self.now = now
    }

    /// Sends one command; `reply` is called on `loop`, possibly before this returns.
    func send(_ arguments: [[UInt8]], reply: @escaping Reply) {
        loop.preconditionInEventLoop()
        let command = Self.encode(arguments, allocator: ByteBufferAllocator())
        switch state {
        case .ready(let channel, let handler):
            handler.send(command, reply: reply, flush: false)
            scheduleFlush(channel)
        case .connecting(var queued):
            queued.append((command, reply))
            state = .connecting(queued)
        case .waiting(let until) where now() < until:
            reply(.failure(.unavailable("reconnecting to Redis")))
        case .idle, .waiting:
            state = .connecting([(command, reply)])
            connect()
        }
    }

    func close() {
        loop.preconditionInEventLoop()
        if case .ready(let channel, _) = state { channel.close(promise: nil) }
        state = .idle
    }

    /// One flush for every command written in this pass of the loop (tasks run after its I/O).
    private func scheduleFlush(_ channel: any Channel) {
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.assumeIsolated().execute { [self] in
            flushScheduled = false
            channel.flush()
        }
    }

    private func connect() {
        let timeout = TimeAmount.nanoseconds(Int64(self.timeout.components.seconds) * 1_000_000_000 + self.timeout.components.attoseconds / 1_000_000_000)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisReplyHandler(timeout: timeout))
                }
            }
        let connected: EventLoopFuture<any Channel> = switch endpoint.address {
        case .tcp(let host, let port): bootstrap.connect(host: host, port: port)
        case .unix(let path): bootstrap.connect(unixDomainSocketPath: path)
        }
        connected.assumeIsolated().whenComplete { [self] result in
            guard case .connecting(let queued) = state else {
                // Closed meanwhile.
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure(let error):
                failed(queued, StoreError.unavailable("cannot connect to Redis: \(error)"))
            case .success(let channel):
                guard let handler = try? channel.pipeline.syncOperations.handler(type: RedisReplyHandler.self) else {
                    channel.close(promise: nil)
                    return failed(queued, .unavailable("cannot set the Redis connection up"))
                }
                handler.onClose = { [weak self, weak handler] in
                    guard let self, case .ready(_, let current) = self.state, current === handler else { return }
                    self.state = .idle
                }
                state = .ready(channel, handler)
                failures = 0
                for command in setupCommands() {
                    handler.send(command.buffer, reply: command.check, flush: false)
                }
                for (command, reply) in queued { handler.send(command, reply: reply, flush: false) }
                channel.flush()
            }
        }
    }

    private func failed(_ queued: [(ByteBuffer, Reply)], _ error: StoreError) {
        backOff()
        for (_, reply) in queued { reply(.failure(error)) }
    }

    /// After a failed attempt: commands fail at once for 50 ms, 100 ms, … capped at 2 s.
    private func backOff() {
        failures += 1
        state = .waiting(until: now() + .milliseconds(Int64(min(2000, 50 << min(failures - 1, 6)))))
    }

    /// AUTH and SELECT, as the hiredis connections send them; a refusal closes the connection
    /// (the commands after it were refused by Redis too, and say so).
    private func setupCommands() -> [(buffer: ByteBuffer, check: Reply)] {
        var commands: [[[UInt8]]] = []
        if let password = endpoint.password {
            commands.append([Array("AUTH".utf8)] + (endpoint.user.map { [Array($0.utf8)] } ?? []) + [Array(password.utf8)])
        }
        if endpoint.database != 0 { commands.append([Array("SELECT".utf8), Array(String(endpoint.database).utf8)]) }
        return commands.map { command in
            (Self.encode(command, allocator: ByteBufferAllocator()), { [self] result in
                guard case .success(.error) = result else { return }
                // A wrong password or database: not retried on every command.
                close()
                backOff()
            })
        }
    }

    /// A command in RESP: an array of bulk strings.
    static func encode(_ arguments: [[UInt8]], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 16 + arguments.reduce(0) { $0 + $1.count + 16 })
        buffer.writeStaticString("*")
        buffer.writeString(String(arguments.count))
        buffer.writeStaticString("\r\n")
        for argument in arguments {
            buffer.writeStaticString("$")
            buffer.writeString(String(argument.count))
            buffer.writeStaticString("\r\n")
            buffer.writeBytes(argument)
            buffer.writeStaticString("\r\n")
        }
        return buffer
    }
}

/// Matches replies to the commands sent, in order, and fails what is waiting when the connection
/// ends or a reply is later than the timeout (the connection is closed then: a reply that comes
/// after it could not be matched to its command any more).
final class RedisReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var reader: UnsafeMutablePointer<redisReader>?
    private var waiting = CircularBuffer<(sent: NIODeadline, reply: RedisLoopConnection.Reply)>()
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    /// Told once when the connection ends.
    var onClose: (() -> Void)?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        reader = redisReaderCreate()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(.unavailable("the Redis connection closed"))
        if let reader { redisReaderFree(reader) }
        reader = nil
        self.context = nil
    }

    func send(_ command: ByteBuffer, reply: @escaping RedisLoopConnection.Reply, flush: Bool) {
        guard let context, context.channel.isActive else { return reply(.failure(.unavailable("the Redis connection closed"))) }
        waiting.append((.now(), reply))
        if timer == nil { armTimer(at: .now() + timeout) }
        if flush {
            context.writeAndFlush(wrapOutboundOut(command), promise: nil)
        } else {
            context.write(wrapOutboundOut(command), promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard let reader else { return }
        let fed = bytes.withUnsafeReadableBytes { raw in
            redisReaderFeed(reader, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
        }
        guard fed == REDIS_OK else { return context.close(promise: nil) }
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                // A protocol error: nothing after it can be trusted.
                return context.close(promise: nil)
            }
            guard let raw else { return }
            let value = RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            guard let next = waiting.popFirst() else { return context.close(promise: nil) }
            next.reply(.success(value))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.unavailable("the Redis connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func armTimer(at deadline: NIODeadline) {
        guard let context else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            guard let oldest = waiting.first else { return }
            if oldest.sent + timeout <= .now() {
                failAll(.unavailable("Redis did not answer in time"))
                self.context?.close(promise: nil)
            } else {
                armTimer(at: oldest.sent + timeout)
            }
        }
    }

    private func failAll(_ error: StoreError) {
        timer?.cancel()
        timer = nil
        let failed = waiting
        waiting.removeAll()
        for entry in failed { entry.reply(.failure(error)) }
        if let onClose {
            self.onClose = nil
            onClose()
        }
    }
}
