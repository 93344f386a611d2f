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
    static let keepAlive: Duration = .seconds(15)

    private let sessions = Mutex<[String: BridgedSession]>([:])
    /// `limits.legacySSESessions`: beyond it a new stream gets 503.
    let maximumSessions: Int

    init(maximumSessions: Int) {
        self.maximumSessions = maximumSessions
    }

    func respond(
        _ endpoint: LegacySSEEndpoint, request: Request, context: GatewayRequestContext, route: CompiledRoute, send: @escaping BridgedSession.Send
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

    private func stream(_ request: Request, context: GatewayRequestContext, route: CompiledRoute, send: @escaping BridgedSession.Send) throws(GatewayError) -> Response {
        // The session's messages (and the keep-alive ticks, nil) as the stream's events.
        let (events, eventsContinuation) = AsyncStream<ByteBuffer?>.makeStream()
        let outbound = BridgedSession.Outbound(
            deliver: { eventsContinuation.yield(SSEEncoding.event(id: nil, data: $0)) },
            finish: { eventsContinuation.finish() }
        )
        let session = BridgedSession(
            id: MCPSessionID.mint(), router: route.router.name, owner: context.caller?.claims.sub, mcpPath: route.router.mcpPath,
            streamHead: request.head, streamContext: context.forInnerRequest(), outbound: outbound, send: send, transport: "legacy SSE"
        )
        let admitted = sessions.withLock { sessions in
            guard sessions.count < maximumSessions else { return false }
            sessions[session.id] = session
            return true
        }
        guard admitted else { throw .atCapacity(what: "legacy SSE sessions", limit: maximumSessions) }
        context.logger.debug("legacy SSE session opened", metadata: ["router": "\(route.router.name)", "session": "\(MCPSessionID.logged(session.id))"])
        let endpointURL = route.router.legacySSEPaths.messages + "?sessionId=" + session.id
        let body = ResponseBody { [self] writer in
            defer {
                sessions.withLock { $0[session.id] = nil }
                session.close()
            }
            try await writer.write(ByteBuffer(string: "event: endpoint\ndata: \(endpointURL)\n\n"))
            let ticker = Task {
                while !Task.isCancelled {
                    guard (try? await Task.sleep(for: Self.keepAlive)) != nil else { break }
                    eventsContinuation.yield(nil)
                }
            }
            defer { ticker.cancel() }
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

    private func message(_ request: inout Request, context: GatewayRequestContext, route: CompiledRoute, send: @escaping BridgedSession.Send) async throws(GatewayError) -> Response {
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

