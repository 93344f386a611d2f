// `--mode stdio`: the floor of a SwiftNIO bridge from Streamable HTTP (session-based revisions)
// to stdio children, for bench/stdio_bridge.py. What any such bridge must do and nothing more:
// NIOHTTP1's server pipeline; `initialize` without a session id spawns a child (posix_spawn, its
// pipes registered with NIOPipeBootstrap on the event loop of the connection that asked) and
// answers with an `Mcp-Session-Id`; a POST with one is written to that child with its JSON-RPC id
// replaced (clients of one session reuse ids) and answered with the child's line, id restored; a
// notification is written and answered 202; DELETE ends the child. A child's pipes belong to one
// event loop, so a request arriving on another loop hops to it and its answer hops back, as in any
// SwiftNIO program. No header policy, no authentication, no JSON validation, no SSE, no
// timeouts: less than the gateway does.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The sessions by id, shared by every event loop.
final class StdioSessions: Sendable {
    private let children = NIOLockedValueBox<[String: StdioChild]>([:])
    private let counter = NIOLockedValueBox(0)
    let command: [String]

    init(command: [String]) {
        self.command = command
    }

    func child(_ id: String) -> StdioChild? {
        children.withLockedValue { $0[id] }
    }

    func add(_ child: StdioChild) -> String {
        let id = "floor-" + String(counter.withLockedValue { value in
            value += 1
            return value
        })
        children.withLockedValue { $0[id] = child }
        return id
    }

    func remove(_ id: String) -> StdioChild? {
        children.withLockedValue { $0.removeValue(forKey: id) }
    }
}

/// One child speaking newline-delimited JSON-RPC. Everything but `loop` and `pid` is touched only
/// on `loop`.
final class StdioChild: @unchecked Sendable {
    let loop: any EventLoop
    let pid: pid_t
    private var channel: (any Channel)?
    private var nextID = 0
    private var waiting: [Int: (rawID: ByteBuffer, promise: EventLoopPromise<ByteBuffer?>)] = [:]

    private init(loop: any EventLoop, pid: pid_t) {
        self.loop = loop
        self.pid = pid
    }

    /// Spawns `command` with its stdin and stdout as pipes registered on `loop`.
    static func spawn(_ command: [String], on loop: any EventLoop) -> EventLoopFuture<StdioChild> {
        var toChild: [Int32] = [-1, -1]
        var fromChild: [Int32] = [-1, -1]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else {
            return loop.makeFailedFuture(FloorError(message: "pipe: \(errno)"))
        }
        // Not inherited by other children (dup2 onto 0 and 1 clears the flag in this one).
        for descriptor in toChild + fromChild { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, &argv, environ)
        close(toChild[0])
        close(fromChild[1])
        guard spawned == 0 else {
            close(toChild[1])
            close(fromChild[0])
            return loop.makeFailedFuture(FloorError(message: "posix_spawn \(command[0]): \(spawned)"))
        }
        let child = StdioChild(loop: loop, pid: pid)
        return NIOPipeBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineSplitter()))
                    try channel.pipeline.syncOperations.addHandler(ChildReader(child: child))
                }
            }
            .takingOwnershipOfDescriptors(input: fromChild[0], output: toChild[1])
            .map { channel in
                child.channel = channel
                return child
            }
    }

    /// On `loop`: writes `body` (one JSON-RPC message) with its id replaced; `promise` gets the
    /// child's answer with the client's id, or nil at once for a notification.
    func send(_ body: ByteBuffer, promise: EventLoopPromise<ByteBuffer?>) {
        guard let channel else { return promise.fail(FloorError(message: "the child is gone")) }
        guard let idRange = Self.idValue(in: body) else {
            var line = body
            line.writeInteger(UInt8(ascii: "\n"))
            channel.writeAndFlush(line, promise: nil)
            return promise.succeed(nil)
        }
        nextID += 1
        let id = nextID
        var line = channel.allocator.buffer(capacity: body.readableBytes + 16)
        line.writeImmutableBuffer(body.getSlice(at: body.readerIndex, length: idRange.lowerBound - body.readerIndex) ?? ByteBuffer())
        line.writeString(String(id))
        line.writeImmutableBuffer(body.getSlice(at: idRange.upperBound, length: body.writerIndex - idRange.upperBound) ?? ByteBuffer())
        line.writeInteger(UInt8(ascii: "\n"))
        waiting[id] = (body.getSlice(at: idRange.lowerBound, length: idRange.count) ?? ByteBuffer(), promise)
        channel.writeAndFlush(line, promise: nil)
    }

    /// A line from the child: the answer to a waiting request (anything else is dropped).
    fileprivate func answer(_ line: ByteBuffer) {
        guard let idRange = Self.idValue(in: line),
              let id = line.getString(at: idRange.lowerBound, length: idRange.count).flatMap({ Int($0) }),
              let (rawID, promise) = waiting.removeValue(forKey: id)
        else { return }
        var answer = ByteBuffer()
        answer.reserveCapacity(line.readableBytes + rawID.readableBytes)
        answer.writeImmutableBuffer(line.getSlice(at: line.readerIndex, length: idRange.lowerBound - line.readerIndex) ?? ByteBuffer())
        answer.writeImmutableBuffer(rawID)
        answer.writeImmutableBuffer(line.getSlice(at: idRange.upperBound, length: line.writerIndex - idRange.upperBound) ?? ByteBuffer())
        promise.succeed(answer)
    }

    fileprivate func ended() {
        channel = nil
        let waiting = self.waiting
        self.waiting = [:]
        for (_, entry) in waiting { entry.promise.fail(FloorError(message: "the child ended")) }
    }

    func terminate() {
        kill(pid, SIGTERM)
    }

    /// Where the value of the first `"id":` member is (a number or a string without commas or
    /// braces, as the benchmark's requests and the children's answers write it).
    static func idValue(in buffer: ByteBuffer) -> Range<Int>? {
        let key = Array(#""id":"#.utf8)
        return buffer.withUnsafeReadableBytes { bytes -> Range<Int>? in
            guard bytes.count > key.count else { return nil }
            var index = 0
            while index + key.count < bytes.count {
                if bytes[index] == key[0], bytes[index + 1] == key[1], bytes[index + 2] == key[2], bytes[index + 3] == key[3], bytes[index + 4] == key[4] {
                    var start = index + key.count
                    while start < bytes.count, bytes[start] == UInt8(ascii: " ") { start += 1 }
                    var end = start
                    while end < bytes.count, bytes[end] != UInt8(ascii: ","), bytes[end] != UInt8(ascii: "}") { end += 1 }
                    return (buffer.readerIndex + start)..<(buffer.readerIndex + end)
                }
                index += 1
            }
            return nil
        }
    }
}

struct FloorError: Error {
    let message: String
}

/// A child's stdout, line by line.
final class LineSplitter: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")),
              let line = buffer.readSlice(length: newline - buffer.readerIndex)
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}

final class ChildReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let child: StdioChild

    init(child: StdioChild) { self.child = child }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        child.answer(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        child.ended()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A client connection's requests, one at a time.
final class StdioFront: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private let sessions: StdioSessions
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(sessions: StdioSessions) { self.sessions = sessions }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            guard let head else { return }
            self.head = nil
            handle(head, body: body, context: context)
        }
    }

    private func handle(_ head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let sessionID = head.headers.first(name: "mcp-session-id")
        switch (head.method, sessionID) {
        case (.DELETE, let id?):
            sessions.remove(id)?.terminate()
            respond(.ok, body: nil, sessionID: nil, context: context)
        case (.POST, let id?):
            guard let child = sessions.child(id) else { return respond(.notFound, body: nil, sessionID: nil, context: context) }
            forward(body, to: child, sessionID: nil, context: context)
        case (.POST, nil):
            // `initialize`: a new child on this connection's event loop.
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            StdioChild.spawn(sessions.command, on: context.eventLoop).assumeIsolated().whenComplete { result in
                let (front, context) = bound.value
                switch result {
                case .success(let child):
                    front.forward(body, to: child, sessionID: front.sessions.add(child), context: context)
                case .failure:
                    front.respond(.internalServerError, body: nil, sessionID: nil, context: context)
                }
            }
        default:
            respond(.methodNotAllowed, body: nil, sessionID: nil, context: context)
        }
    }

    private func forward(_ body: ByteBuffer, to child: StdioChild, sessionID: String?, context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: ByteBuffer?.self)
        if child.loop.inEventLoop {
            child.send(body, promise: promise)
        } else {
            child.loop.execute { child.send(body, promise: promise) }
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        promise.futureResult.assumeIsolated().whenComplete { result in
            let (front, context) = bound.value
            switch result {
            case .success(let answer?): front.respond(.ok, body: answer, sessionID: sessionID, context: context)
            case .success(nil): front.respond(.accepted, body: nil, sessionID: sessionID, context: context)
            case .failure: front.respond(.badGateway, body: nil, sessionID: nil, context: context)
            }
        }
    }

    private func respond(_ status: HTTPResponseStatus, body: ByteBuffer?, sessionID: String?, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        if let sessionID { headers.add(name: "Mcp-Session-Id", value: sessionID) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if let body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
