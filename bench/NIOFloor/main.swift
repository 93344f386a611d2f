// The floor of a SwiftNIO reverse proxy (not part of the product): what relaying a request costs
// with SwiftNIO's own channels and HTTP/1 codec and nothing of the gateway's. bench/http_proxy.py
// measures it beside nginx `proxy_pass` and the gateway, so that the gateway's CPU per request
// can be split into what SwiftNIO itself costs and what the gateway adds on top.
//
// Two modes, both with one kept-alive upstream connection per client connection, on the client
// connection's own event loop (as the gateway's fast relay keeps its upstream connections):
// - `tcp`: bytes in, bytes out; no parsing at all (less work than any HTTP proxy does);
// - `http`: NIOHTTP1's server pipeline and client codec; the request head, body and end are passed
//   through unchanged, and so is the response (no header policy, no routing, no authentication).
//
// A third, `stdio` (StdioRelay.swift), bridges session-based Streamable HTTP to stdio children.
//
// Usage: NIOFloor --listen PORT --upstream PORT --mode tcp|http [--threads N]
//        NIOFloor --listen PORT --mode stdio --child 'COMMAND [ARGUMENT…]' [--threads N]

import NIOCore
import NIOHTTP1
import NIOPosix

struct Options {
    var listenPort = 0
    var upstreamPort = 0
    var mode = "http"
    var threads = System.coreCount
    var child: [String] = []

    init(arguments: [String]) throws {
        var rest = arguments.dropFirst()
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { throw UsageError(message: "\(flag) needs a value") }
            switch flag {
            case "--listen": listenPort = Int(value) ?? 0
            case "--upstream": upstreamPort = Int(value) ?? 0
            case "--mode": mode = value
            case "--threads": threads = Int(value) ?? 0
            case "--child": child = value.split(separator: " ").map(String.init)
            default: throw UsageError(message: "unknown option \(flag)")
            }
        }
        let complete = mode == "stdio" ? !child.isEmpty : upstreamPort > 0 && ["tcp", "http"].contains(mode)
        guard listenPort > 0, threads > 0, complete else {
            throw UsageError(message: "usage: NIOFloor --listen PORT (--upstream PORT --mode tcp|http | --mode stdio --child 'COMMAND [ARGUMENT…]') [--threads N]")
        }
    }
}

struct UsageError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Bytes read on one channel are written to its partner; a read burst ends with one flush.
final class BytePipe: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let partner: any Channel

    init(partner: any Channel) { self.partner = partner }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner.write(unwrapInboundIn(data), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The client's request parts, as they are, to the upstream connection.
final class RequestRelay: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    private let upstream: any Channel

    init(upstream: any Channel) { self.upstream = upstream }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): upstream.write(HTTPClientRequestPart.head(head), promise: nil)
        case .body(let body): upstream.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        case .end(let trailers): upstream.writeAndFlush(HTTPClientRequestPart.end(trailers), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The upstream's response parts, as they are, to the client.
final class ResponseRelay: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let client: any Channel

    init(client: any Channel) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): client.write(HTTPServerResponsePart.head(head), promise: nil)
        case .body(let body): client.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil)
        case .end(let trailers): client.writeAndFlush(HTTPServerResponsePart.end(trailers), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

let options: Options
do {
    options = try Options(arguments: CommandLine.arguments)
} catch {
    print(error)
    exit(2)
}

let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
let upstreamPort = options.upstreamPort
let mode = options.mode

if mode == "stdio" {
    // Ended children are reaped by the kernel.
    signal(SIGCHLD, SIG_IGN)
    let sessions = StdioSessions(command: options.child)
    let server = try await ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 1024)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { client in
            client.eventLoop.makeCompletedFuture {
                try client.pipeline.syncOperations.configureHTTPServerPipeline()
                try client.pipeline.syncOperations.addHandler(StdioFront(sessions: sessions))
            }
        }
        .bind(host: "127.0.0.1", port: options.listenPort)
        .get()
    print("NIOFloor (stdio) on 127.0.0.1:\(options.listenPort) → \(options.child.joined(separator: " "))")
    try await server.closeFuture.get()
    exit(0)
}

let server = try await ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { client in
        // The upstream connection is made before the client channel is registered, so nothing is
        // read from the client until there is somewhere to send it.
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { upstream in
                upstream.eventLoop.makeCompletedFuture {
                    if mode == "tcp" {
                        try upstream.pipeline.syncOperations.addHandler(BytePipe(partner: client))
                    } else {
                        try upstream.pipeline.syncOperations.addHTTPClientHandlers()
                        try upstream.pipeline.syncOperations.addHandler(ResponseRelay(client: client))
                    }
                }
            }
            .connect(host: "127.0.0.1", port: upstreamPort)
            .flatMapThrowing { upstream in
                if mode == "tcp" {
                    try client.pipeline.syncOperations.addHandler(BytePipe(partner: upstream))
                } else {
                    try client.pipeline.syncOperations.configureHTTPServerPipeline()
                    try client.pipeline.syncOperations.addHandler(RequestRelay(upstream: upstream))
                }
            }
    }
    .bind(host: "127.0.0.1", port: options.listenPort)
    .get()

print("NIOFloor (\(mode)) on 127.0.0.1:\(options.listenPort) → 127.0.0.1:\(upstreamPort), \(options.threads) threads")
try await server.closeFuture.get()
