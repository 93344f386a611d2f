import AuthorizationServer
import Foundation
import GatewayAuth
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
import MCPTransport
import NIOCore
import NIOFoundationEssentialsCompat
import Synchronization

/// One client of a message transport (a 2024-11-05 HTTP+SSE stream, a WebSocket) and the inner
/// session-based Streamable HTTP session of the gateway's own it drives: each message the client
/// sends goes through the pipeline (`send`) as a request of that session, with the credentials it
/// came with; whatever the answers and the session's GET stream hold goes to `outbound`, from the
/// task that read it (no task of its own to pass messages on: a session keeps its tasks for its
/// whole life, bench/results-connections.md). The
/// client's connection stands in for the inner requests' own: when it closes (`close`), what is
/// in flight is cancelled and the inner session is deleted.
final class BridgedSession: Sendable {
    typealias Send = @Sendable (Request, GatewayRequestContext) async -> Response

    /// Where the session's messages go: the client's transport.
    struct Outbound: Sendable {
        /// Hands one message to the client; returns once the transport has taken it (a WebSocket
        /// write waits for the socket). Messages one task delivers arrive in that order.
        let deliver: @Sendable (ByteBuffer) async -> Void
        /// The session is over: nothing more is delivered.
        let finish: @Sendable () -> Void
        /// Carries the inner session's GET stream without a task, when the transport can: a
        /// WebSocket's connection relays it as the fast relay relays a client's own GET
        /// (`WebSocketSession`). Called with the GET's head, and with what to do instead when the
        /// relay cannot carry it (the pipeline's stages need a task for it).
        var relayStream: (@Sendable (HTTPRequest, _ otherwise: @escaping @Sendable () -> Void) -> Void)?
        /// The GET stream a task read has ended (a relayed one tells its transport itself).
        var streamEnded: (@Sendable () -> Void)?

        init(
            deliver: @escaping @Sendable (ByteBuffer) async -> Void, finish: @escaping @Sendable () -> Void,
            relayStream: (@Sendable (HTTPRequest, _ otherwise: @escaping @Sendable () -> Void) -> Void)? = nil,
            streamEnded: (@Sendable () -> Void)? = nil
        ) {
            self.deliver = deliver
            self.finish = finish
            self.relayStream = relayStream
            self.streamEnded = streamEnded
        }
    }

    struct State {
        /// The inner session (the gateway's `Mcp-Session-Id`), once `initialize` was answered.
        var innerSession: String?
        var protocolVersion: String?
        var tasks: [UInt64: Task<Void, Never>] = [:]
        var nextTask: UInt64 = 0
        var closed = false
    }

    let id: String
    let router: String
    /// The verified caller's subject (nil on `auth: none` routers).
    let owner: String?
    let mcpPath: String
    /// The stream's request: its credentials open the inner GET stream.
    let streamHead: HTTPRequest
    /// The stream's context: its connection is the one whose close ends the session.
    let streamContext: GatewayRequestContext
    let outbound: Outbound
    let send: BridgedSession.Send
    /// For the log: which transport the client came by.
    let transport: String
    private let state = Mutex(State())

    init(
        id: String, router: String, owner: String?, mcpPath: String, streamHead: HTTPRequest, streamContext: GatewayRequestContext,
        outbound: Outbound, send: @escaping BridgedSession.Send, transport: String
    ) {
        self.transport = transport
        self.id = id
        self.router = router
        self.owner = owner
        self.mcpPath = mcpPath
        self.streamHead = streamHead
        self.streamContext = streamContext
        self.outbound = outbound
        self.send = send
    }

    /// Sends `message` through the pipeline as a Streamable HTTP POST of the inner session, with
    /// the credentials of the POST it came in; whatever the answer holds goes out on the stream.
    func dispatch(_ message: ByteBuffer, head: HTTPRequest) {
        let parsed = try? JSONRPCMessage(parsing: message)
        let isInitialize = parsed?.method == "initialize"
        run { [self] in
            let (inner, protocolVersion) = state.withLock { ($0.innerSession, $0.protocolVersion) }
            var fields = Self.credentials(of: head.headerFields)
            fields[.contentType] = "application/json"
            fields[.accept] = "application/json, text/event-stream"
            if let inner { fields[MCPHeaders.sessionID] = inner }
            if let protocolVersion { fields[MCPHeaders.protocolVersion] = protocolVersion }
            let response = await post(message, fields: fields, like: head)
            if isInitialize, (200..<300).contains(response.status.code), let session = response.headers[MCPHeaders.sessionID] {
                // The answer (JSON, or SSE from an upstream) names the protocol version the inner
                // session's requests must carry.
                var version: String?
                for message in await Self.messages(of: response) {
                    if let parsed = try? JSONRPCMessage(parsing: message), parsed.isResponse {
                        version = parsed.string(at: ["result", "protocolVersion"])
                    }
                    await outbound.deliver(message)
                }
                state.withLock {
                    $0.innerSession = session
                    $0.protocolVersion = version
                }
                listen()
                return
            }
            await forward(response, for: parsed)
        }
    }

    /// The inner session's standalone GET stream: what the server sends outside any request.
    private func listen() {
        guard let (inner, protocolVersion) = state.withLock({ state in state.innerSession.map { ($0, state.protocolVersion) } }) else { return }
        let head = innerRequest(.get, session: inner, protocolVersion: protocolVersion, accept: "text/event-stream")
        guard let relayStream = outbound.relayStream else { return listenInTask(head) }
        relayStream(head) { [self] in listenInTask(head) }
    }

    /// The GET stream through the whole pipeline, read by a task for the stream's life.
    private func listenInTask(_ head: HTTPRequest) {
        run { [self] in
            let response = await Self.answeredApart(Request(head: head, body: RequestBody(buffer: ByteBuffer())), context: streamContext, send: send)
            guard response.status == .ok, MediaTypes.isEventStream(response.headers[.contentType]) else { return }
            try? await response.body.write(MessageFeedWriter(deliver: outbound.deliver, eventStream: true))
            // The stream ended (the upstream ended it, or the gateway is stopping); a session
            // closed meanwhile has cancelled this task.
            if !Task.isCancelled { outbound.streamEnded?() }
        }
    }

    /// `send`'s answer, made in a child task that has ended when this returns, as
    /// `ConnectionResponder` answers: a task keeps the slabs its deepest await needed until it
    /// ends, the pipeline's frames take tens of KiB, and the listening task lives as long as the
    /// stream (bench/results-connections.md). (An `async let` child ends with its scope: this
    /// function's, not the caller's.)
    private static func answeredApart(_ request: Request, context: GatewayRequestContext, send: @escaping BridgedSession.Send) async -> Response {
        async let answered = GatewayMadeRequest.$isActive.withValue(true) { await send(request, context) }
        return await answered
    }

    /// The stream closed: what is in flight is cancelled and the inner session is deleted.
    func close() {
        let (tasks, inner, protocolVersion) = state.withLock { state in
            state.closed = true
            defer { state.tasks = [:] }
            return (Array(state.tasks.values), state.innerSession, state.protocolVersion)
        }
        for task in tasks { task.cancel() }
        outbound.finish()
        streamContext.logger.debug("\(transport) session closed", metadata: ["router": "\(router)", "session": "\(MCPSessionID.logged(id))"])
        guard let inner else { return }
        let head = innerRequest(.delete, session: inner, protocolVersion: protocolVersion)
        let send = self.send, context = streamContext
        Task {
            _ = await GatewayMadeRequest.$isActive.withValue(true) { await send(Request(head: head, body: RequestBody(buffer: ByteBuffer())), context) }
        }
    }

    private func post(_ message: ByteBuffer, fields: HTTPFields, like original: HTTPRequest) async -> Response {
        var head = original
        head.method = .post
        head.path = mcpPath
        head.headerFields = fields
        return await GatewayMadeRequest.$isActive.withValue(true) {
            await send(Request(head: head, body: RequestBody(buffer: message)), streamContext)
        }
    }

    /// An answer's messages onto the stream. A refusal that is not a JSON-RPC message (an HTTP
    /// error of the pipeline) becomes a JSON-RPC error for the request it answers.
    private func forward(_ response: Response, for message: JSONRPCMessage?) async {
        let eventStream = MediaTypes.isEventStream(response.headers[.contentType])
        if (200..<300).contains(response.status.code) {
            try? await response.body.write(MessageFeedWriter(deliver: outbound.deliver, eventStream: eventStream))
            return
        }
        let body = await Self.messages(of: response).first
        if let body, let answer = try? JSONRPCMessage(parsing: body), answer.isResponse {
            await outbound.deliver(body)
            return
        }
        guard let message, message.isRequest else { return }
        let detail = body.map { String(buffer: $0) } ?? ""
        await outbound.deliver(JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "HTTP \(response.status.code): \(detail.prefix(200))"))
    }

    /// Every message of a whole answer (a JSON body, or each event of an SSE body).
    private static func messages(of response: Response) async -> [ByteBuffer] {
        let eventStream = MediaTypes.isEventStream(response.headers[.contentType])
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        try? await response.body.write(MessageFeedWriter(into: continuation, eventStream: eventStream))
        continuation.finish()
        var messages: [ByteBuffer] = []
        for await message in stream { messages.append(message) }
        return messages
    }

    /// A request of the inner session, with the stream's credentials.
    private func innerRequest(_ method: HTTPRequest.Method, session: String, protocolVersion: String?, accept: String? = nil) -> HTTPRequest {
        var fields = Self.credentials(of: streamHead.headerFields)
        if let accept { fields[.accept] = accept }
        fields[MCPHeaders.sessionID] = session
        if let protocolVersion { fields[MCPHeaders.protocolVersion] = protocolVersion }
        var head = streamHead
        head.method = method
        head.path = mcpPath
        head.headerFields = fields
        return head
    }

    /// The request headers that carry who the caller is (and nothing of the transport).
    private static func credentials(of fields: HTTPFields) -> HTTPFields {
        var kept = HTTPFields()
        for field in fields {
            switch field.name {
            case .contentLength, .contentType, .accept, .transferEncoding, .connection, MCPHeaders.sessionID, MCPHeaders.protocolVersion, MCPHeaders.lastEventID,
                 .upgrade, .secWebSocketKey, .secWebSocketVersion, .secWebSocketExtensions:
                continue
            default: kept.append(field)
            }
        }
        return kept
    }

    private func run(_ work: @escaping @Sendable () async -> Void) {
        state.withLock { current in
            guard !current.closed else { return }
            let key = current.nextTask
            current.nextTask += 1
            current.tasks[key] = Task { [self] in
                // Requests the gateway makes: their bodies (and the answers' bodies, written here
                // too) have no client connection of their own to watch.
                await GatewayMadeRequest.$isActive.withValue(true) { await work() }
                _ = state.withLock { $0.tasks.removeValue(forKey: key) }
            }
        }
    }

    /// The session's tasks that have not ended: messages in flight (and a stream read by a task).
    var tasksInFlight: Int { state.withLock { $0.tasks.count } }
}
