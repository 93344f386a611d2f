public import NIOCore
import NIOPosix
public import MCPTransport
import Synchronization
import Foundation

/// How the gateway's sockets size their receive buffers. NIO's default starts every connection at
/// 2 KiB and keeps that buffer, pooled, for the connection's life: on a held connection (an idle
/// keep-alive, a session's stream and its upstream connection) it was the largest single
/// allocation (bench/results-connections.md). MCP requests and most answers are a few hundred
/// bytes; a connection that reads more grows its buffer on the next read (doubling, up to 64 KiB)
/// and keeps what its traffic needs.
public enum ReceiveBuffers {
    public static let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
}

/// Where the fast relay sends a plain-HTTP upstream's requests: its address and the request
/// target, computed once per configuration (nil for an upstream the relay does not carry:
/// `https`, or a URL it cannot read).
public struct RelayTarget: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// `Host` as the upstream expects it (with the port unless it is 80).
    public var hostHeader: String
    /// The URL's path and query (the client's query is appended per request).
    public var path: String

    public init?(url: String) {
        guard let components = URLComponents(string: url), components.scheme?.lowercased() == "http", var host = components.host, !host.isEmpty,
              components.user == nil, components.fragment == nil
        else { return nil }
        // An IPv6 literal, with or without the brackets the URL had.
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let port = components.port ?? 80
        self.host = host
        self.port = port
        let bracketed = host.contains(":") ? "[\(host)]" : host
        self.hostHeader = port == 80 ? bracketed : "\(bracketed):\(port)"
        var path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        if let query = components.percentEncodedQuery { path += "?" + query }
        self.path = path
    }

    /// The request target with the client's raw query appended.
    public func requestTarget(query: String?) -> String {
        guard let query, !query.isEmpty else { return path }
        return path + (path.contains("?") ? "&" : "?") + query
    }
}

/// What an exchange on an upstream connection hears back. Every call comes on the connection's
/// event loop, which is the client connection's own: the relay never changes threads.
public protocol UpstreamExchange: AnyObject {
    func upstreamResponded(_ head: UpstreamResponseHead)
    func upstreamBody(_ part: ByteBuffer)
    /// The end of one read from the upstream socket: the moment to flush what was relayed.
    func upstreamReadComplete()
    func upstreamEnded()
    /// The connection failed or closed before the response ended.
    func upstreamFailed(_ error: UpstreamError)
}

/// One kept-alive HTTP/1.1 connection to an upstream, speaking the relay's own HTTP/1.1
/// (`UpstreamHTTP1.swift`) straight on the socket's bytes. It carries one exchange at a time and
/// goes back to its loop's pool when a response ends with keep-alive.
public final class UpstreamConnection: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let target: RelayTarget
    let service: String
    private unowned let pool: UpstreamLoopPool
    private var context: ChannelHandlerContext?
    private var exchange: (any UpstreamExchange)?
    private var parser = UpstreamResponseParser()
    var idleSince = NIODeadline.now()

    init(target: RelayTarget, service: String, pool: UpstreamLoopPool) {
        self.target = target
        self.service = service
        self.pool = pool
    }

    var isActive: Bool { context?.channel.isActive ?? false }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Sends one request written beforehand (`UpstreamRequestWriter.writePost`); the answer goes
    /// to `exchange`.
    public func send(request: ByteBuffer, to exchange: any UpstreamExchange) {
        guard let context else {
            exchange.upstreamFailed(UpstreamError(.protocolFailure, service: service, detail: "the upstream closed the connection before answering"))
            return
        }
        self.exchange = exchange
        parser.reset()
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    /// Reads from the upstream paused (the client is not keeping up) or resumed.
    public func setReading(_ reading: Bool) {
        guard let channel = context?.channel else { return }
        try? channel.syncOptions?.setOption(.autoRead, value: reading)
        if reading { channel.read() }
    }

    /// The exchange is abandoned (the client went away, or timed out): the connection closes, so
    /// the upstream sees the request cancelled.
    public func abandon() {
        exchange = nil
        context?.close(promise: nil)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard exchange != nil else {
            // Nothing was asked: whatever this is, the connection is not used again.
            context.close(promise: nil)
            return
        }
        var ended = false
        do {
            try parser.parse(bytes) { event in
                switch event {
                case .head(let head): exchange?.upstreamResponded(head)
                case .body(let part): exchange?.upstreamBody(part)
                case .end: ended = true
                }
            }
        } catch {
            // Bytes behind the end of the response: the exchange is complete, the connection unusable.
            guard ended else { return fail(context: context, detail: "the upstream's answer could not be read (\(error))") }
        }
        guard ended else { return }
        let finished = exchange
        exchange = nil
        // Back to the pool first: the client's next request (pipelined) may take it at once.
        if parser.reusable { pool.release(self) } else { context.close(promise: nil) }
        finished?.upstreamEnded()
    }

    private func fail(context: ChannelHandlerContext, detail: String) {
        let failed = exchange
        exchange = nil
        context.close(promise: nil)
        failed?.upstreamFailed(UpstreamError(.protocolFailure, service: service, detail: detail))
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        pool.remove(self)
        // A body without a length ends with the connection.
        if exchange != nil, parser.closed() {
            let finished = exchange
            exchange = nil
            finished?.upstreamEnded()
        }
        let failed = exchange
        exchange = nil
        failed?.upstreamFailed(UpstreamError(.protocolFailure, service: service, detail: "the upstream closed the connection before answering"))
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, detail: "the upstream's answer could not be read (\(error))")
    }
}

/// The kept-alive upstream connections of one event loop. Used only on that loop: a request
/// relayed from a client connection goes out on a connection of the same thread.
public final class UpstreamLoopPool {
    /// Idle connections are not reused after this long: servers close kept-alive connections
    /// after a few seconds of their own (uvicorn: 5), and a request sent as the close arrives
    /// would fail.
    static let maxIdle = TimeAmount.seconds(4)
    static let maxIdlePerTarget = 512

    let eventLoop: any EventLoop
    private var idle: [RelayTarget: [UpstreamConnection]] = [:]

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// A connection to `target`: an idle one, or a new one.
    public func connection(
        to target: RelayTarget, service: String, connectTimeout: TimeAmount, _ done: @escaping (Result<UpstreamConnection, UpstreamError>) -> Void
    ) {
        let now = NIODeadline.now()
        while let connection = idle[target]?.popLast() {
            if connection.isActive, now - connection.idleSince < Self.maxIdle { return done(.success(connection)) }
            connection.abandon()
        }
        let connection = UpstreamConnection(target: target, service: service, pool: self)
        let bound = NIOLoopBound(connection, eventLoop: eventLoop)
        let connecting = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ReceiveBuffers.allocator)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(bound.value)
                }
            }
            .connect(host: target.host, port: target.port)
        connecting.assumeIsolated().whenComplete { result in
            switch result {
            case .success: done(.success(bound.value))
            case .failure(let error):
                var timedOut = false
                if case ChannelError.connectTimeout = error { timedOut = true }
                done(.failure(UpstreamError(
                    timedOut ? .timeout : .unreachable, service: service,
                    detail: timedOut ? "timed out connecting to the upstream" : "cannot connect to the upstream (\(error))"
                )))
            }
        }
    }

    func release(_ connection: UpstreamConnection) {
        guard connection.isActive else { return }
        connection.idleSince = .now()
        var list = idle[connection.target, default: []]
        guard list.count < Self.maxIdlePerTarget else { return connection.abandon() }
        list.append(connection)
        idle[connection.target] = list
    }

    func remove(_ connection: UpstreamConnection) {
        guard var list = idle[connection.target], let index = list.firstIndex(where: { $0 === connection }) else { return }
        list.remove(at: index)
        idle[connection.target] = list
    }
}

/// One pool of upstream connections per event loop, made on first use.
public final class UpstreamRelayPools: Sendable {
    private let pools = Mutex<[ObjectIdentifier: NIOLoopBound<UpstreamLoopPool>]>([:])

    public init() {}

    /// The pool of `eventLoop`; call on that loop.
    public func pool(on eventLoop: any EventLoop) -> UpstreamLoopPool {
        let key = ObjectIdentifier(eventLoop)
        if let pool = pools.withLock({ $0[key] }) { return pool.value }
        let pool = UpstreamLoopPool(eventLoop: eventLoop)
        let bound = NIOLoopBound(pool, eventLoop: eventLoop)
        pools.withLock { $0[key] = bound }
        return pool
    }
}
