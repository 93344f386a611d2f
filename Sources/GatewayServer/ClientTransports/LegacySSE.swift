import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayConfig
import HTTPTypes
import Hummingbird
import Logging
import MCPMessages
import MCPTransport
import NIOCore
import NIOFoundationEssentialsCompat
import Synchronization

/// Which 2024-11-05 HTTP+SSE endpoint a request is for (`RouteMatching` sets it).
enum LegacySSEEndpoint: Sendable, Equatable {
    /// `GET <prefix>/sse`: the session's event stream.
    case stream
    /// `POST <prefix>/messages?sessionId=…`: one client message (or a batch) for that session.
    case messages

    init?(path: String, router: RouterConfiguration) {
        guard router.legacySSE else { return nil }
        let paths = router.legacySSEPaths
        switch path {
        case paths.stream, paths.stream + "/": self = .stream
        case paths.messages, paths.messages + "/": self = .messages
        default: return nil
        }
    }
}

/// The 2024-11-05 HTTP+SSE transport for old clients (SDK 1.x `sse_client`, early IDE plugins):
/// `GET <prefix>/sse` opens a stream whose first event (`endpoint`) names where to POST messages;
/// answers and server-initiated messages come back on that stream as `message` events.
///
/// Each legacy session is one session-based Streamable HTTP session of the gateway's own, driven
/// through the same pipeline as any client's request (`send`): every message is authenticated
/// again with the credentials it came with, parsed, rate limited, policed, audited and dispatched
/// to whatever the router leads to (stdio child, HTTP upstream, group, translated 2026-07-28
/// server). The stream's connection stands in for the client's: when it closes, the messages in
/// flight are cancelled and the inner session is deleted.
final class LegacySSEClients: Sendable {
    typealias Send = @Sendable (Request, GatewayRequestContext) async -> Response

    static let maximumSessions = 1024
    static let keepAlive: Duration = .seconds(15)

    private let sessions = Mutex<[String: LegacySSESession]>([:])

    func respond(
        _ endpoint: LegacySSEEndpoint, request: Request, context: GatewayRequestContext, route: CompiledRoute, send: @escaping Send
    ) async throws(GatewayError) -> Response {
        switch endpoint {
        case .stream:
            guard request.method == .get else { throw .methodNotAllowed(method: request.method.rawValue) }
            return try stream(request, context: context, route: route, send: send)
        case .messages:
            guard request.method == .post else { throw .methodNotAllowed(method: request.method.rawValue) }
            var request = request
            return try await message(&request, context: context, route: route, send: send)
        }
    }

    var count: Int { sessions.withLock { $0.count } }

    // MARK: the stream

    private func stream(_ request: Request, context: GatewayRequestContext, route: CompiledRoute, send: @escaping Send) throws(GatewayError) -> Response {
        let (outbound, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let session = LegacySSESession(
            id: MCPSessionID.mint(), router: route.router.name, owner: context.caller?.claims.sub, mcpPath: route.router.mcpPath,
            streamHead: request.head, streamContext: context.forInnerRequest(), outbound: continuation, send: send
        )
        let admitted = sessions.withLock { sessions in
            guard sessions.count < Self.maximumSessions else { return false }
            sessions[session.id] = session
            return true
        }
        guard admitted else { throw .atCapacity(what: "legacy SSE sessions", limit: Self.maximumSessions) }
        context.logger.debug("legacy SSE session opened", metadata: ["router": "\(route.router.name)", "session": "\(MCPSessionID.logged(session.id))"])
        let endpointURL = route.router.legacySSEPaths.messages + "?sessionId=" + session.id
        let body = ResponseBody { [self] writer in
            defer {
                sessions.withLock { $0[session.id] = nil }
                session.close()
            }
            try await writer.write(ByteBuffer(string: "event: endpoint\ndata: \(endpointURL)\n\n"))
            let (events, eventsContinuation) = AsyncStream<ByteBuffer?>.makeStream()
            let forwarding = Task {
                for await message in outbound { eventsContinuation.yield(SSEEncoding.event(id: nil, data: message)) }
                eventsContinuation.finish()
            }
            let ticker = Task {
                while !Task.isCancelled {
                    guard (try? await Task.sleep(for: Self.keepAlive)) != nil else { break }
                    eventsContinuation.yield(nil)
                }
            }
            defer {
                ticker.cancel()
                forwarding.cancel()
            }
            try await request.cancellingOnInboundClose {
                for await event in events {
                    try await writer.write(event ?? ByteBuffer(string: ": keep-alive\n\n"))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: MCPResponses.eventStreamHeaders, body: body)
    }

    // MARK: messages

    private func message(_ request: inout Request, context: GatewayRequestContext, route: CompiledRoute, send: @escaping Send) async throws(GatewayError) -> Response {
        guard let id = request.uri.queryParameters["sessionId"].map(String.init), !id.isEmpty else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Bad Request: sessionId is required (from the stream's endpoint event)")
        }
        // Another caller's session, or another router's, is answered like one that does not
        // exist: a session id is no oracle.
        guard let session = sessions.withLock({ $0[id] }), session.router == route.router.name, session.owner == context.caller?.claims.sub else {
            throw .sessionNotFound
        }
        let body = try await RequestBodyReader.read(&request, limit: route.maxRequestBodyBytes)
        let messages = try Self.split(body)
        for message in messages {
            session.dispatch(message, head: request.head)
        }
        return Response(status: .accepted, headers: [.contentType: "text/plain"], body: ResponseBody(byteBuffer: ByteBuffer(string: "Accepted")))
    }

    /// One message, or each message of a batch (2024-11-05 allowed them; each goes on its own).
    static func split(_ body: ByteBuffer) throws(GatewayError) -> [ByteBuffer] {
        let first = body.readableBytesView.first { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }
        guard first == UInt8(ascii: "[") else { return [body] }
        guard let array = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [Any], !array.isEmpty else {
            throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: an empty or unreadable batch")
        }
        var messages: [ByteBuffer] = []
        for element in array {
            guard JSONSerialization.isValidJSONObject(element), let data = try? JSONSerialization.data(withJSONObject: element, options: [.withoutEscapingSlashes]) else {
                throw .badRequest(code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: a batch holds JSON-RPC message objects")
            }
            messages.append(ByteBuffer(bytes: data))
        }
        return messages
    }
}

/// One legacy client's session: its stream, and the inner session-based session it drives.
final class LegacySSESession: Sendable {
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
    let outbound: AsyncStream<ByteBuffer>.Continuation
    let send: LegacySSEClients.Send
    private let state = Mutex(State())

    init(
        id: String, router: String, owner: String?, mcpPath: String, streamHead: HTTPRequest, streamContext: GatewayRequestContext,
        outbound: AsyncStream<ByteBuffer>.Continuation, send: @escaping LegacySSEClients.Send
    ) {
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
                    outbound.yield(message)
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
        run { [self] in
            guard let (inner, protocolVersion) = state.withLock({ state in state.innerSession.map { ($0, state.protocolVersion) } }) else { return }
            var fields = Self.credentials(of: streamHead.headerFields)
            fields[.accept] = "text/event-stream"
            fields[MCPHeaders.sessionID] = inner
            if let protocolVersion { fields[MCPHeaders.protocolVersion] = protocolVersion }
            var head = streamHead
            head.method = .get
            head.path = mcpPath
            head.headerFields = fields
            let response = await GatewayMadeRequest.$isActive.withValue(true) { await send(Request(head: head, body: RequestBody(buffer: ByteBuffer())), streamContext) }
            guard response.status == .ok, response.headers[.contentType]?.lowercased().hasPrefix("text/event-stream") == true else { return }
            try? await response.body.write(MessageFeedWriter(into: outbound, eventStream: true))
        }
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
        streamContext.logger.debug("legacy SSE session closed", metadata: ["router": "\(router)", "session": "\(MCPSessionID.logged(id))"])
        guard let inner else { return }
        var fields = Self.credentials(of: streamHead.headerFields)
        fields[MCPHeaders.sessionID] = inner
        if let protocolVersion { fields[MCPHeaders.protocolVersion] = protocolVersion }
        var head = streamHead
        head.method = .delete
        head.path = mcpPath
        head.headerFields = fields
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
        let eventStream = response.headers[.contentType]?.lowercased().hasPrefix("text/event-stream") ?? false
        if (200..<300).contains(response.status.code) {
            try? await response.body.write(MessageFeedWriter(into: outbound, eventStream: eventStream))
            return
        }
        let body = await Self.messages(of: response).first
        if let body, let answer = try? JSONRPCMessage(parsing: body), answer.isResponse {
            outbound.yield(body)
            return
        }
        guard let message, message.isRequest else { return }
        let detail = body.map { String(buffer: $0) } ?? ""
        outbound.yield(JSONRPCErrorResponse.make(rawID: message.rawID, code: JSONRPCErrorResponse.internalError, message: "HTTP \(response.status.code): \(detail.prefix(200))"))
    }

    /// Every message of a whole answer (a JSON body, or each event of an SSE body).
    private static func messages(of response: Response) async -> [ByteBuffer] {
        let eventStream = response.headers[.contentType]?.lowercased().hasPrefix("text/event-stream") ?? false
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        try? await response.body.write(MessageFeedWriter(into: continuation, eventStream: eventStream))
        continuation.finish()
        var messages: [ByteBuffer] = []
        for await message in stream { messages.append(message) }
        return messages
    }

    /// The request headers that carry who the caller is (and nothing of the transport).
    private static func credentials(of fields: HTTPFields) -> HTTPFields {
        var kept = HTTPFields()
        for field in fields {
            switch field.name {
            case .contentLength, .contentType, .accept, .transferEncoding, .connection, MCPHeaders.sessionID, MCPHeaders.protocolVersion, MCPHeaders.lastEventID: continue
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
}
