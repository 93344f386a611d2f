import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayConfig
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import MCPMessages
import MCPTransport
import NIOCore
import Synchronization

/// MCP over WebSocket on every MCP endpoint: an HTTP/1.1 upgrade (subprotocol `mcp`) of a GET to
/// the router's `mcpPath`, one JSON-RPC message per text frame, pings every 30 s. The connection is
/// one session: it drives a session-based session of the gateway's own (`BridgedSession`), so
/// server→client requests and notifications flow on it, and every message goes through the whole
/// pipeline with the upgrade request's credentials. Those are checked before the upgrade, by the
/// same stages as any request (route, Host, Origin, authentication); a request they refuse is not
/// upgraded (the WebSocket library answers an empty 400; the log says why). A browser
/// cannot set `Authorization` on a WebSocket: the token may come as a subprotocol
/// `bearer.<token>` instead (never echoed back).
struct WebSocketClients: Sendable {
    static let subprotocol = "mcp"
    static let bearerPrefix = "bearer."

    let sessions: SessionCount

    /// Live WebSocket sessions, across entry points.
    final class SessionCount: Sendable {
        private let count = Mutex(0)
        /// `limits.webSocketSessions`: beyond it an upgrade gets 503.
        let limit: Int

        init(limit: Int) {
            self.limit = limit
        }

        func admit() -> Bool { count.withLock { guard $0 < limit else { return false }; $0 += 1; return true } }
        func release() { count.withLock { $0 -= 1 } }
        var current: Int { count.withLock { $0 } }
    }

    /// The upgrade request as the pipeline's stages and the inner requests see it: a token sent as
    /// a `bearer.<token>` subprotocol becomes the `Authorization` header.
    static func credentialed(_ head: HTTPRequest) -> (head: HTTPRequest, offersMCP: Bool, offersAny: Bool) {
        var head = head
        let offered = head.headerFields[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        if head.headerFields[.authorization] == nil, let bearer = offered.first(where: { $0.hasPrefix(bearerPrefix) }) {
            head.headerFields[.authorization] = "Bearer " + bearer.dropFirst(bearerPrefix.count)
        }
        head.headerFields[.secWebSocketProtocol] = nil
        return (head, offered.contains(subprotocol), !offered.isEmpty)
    }

    /// Serves one upgraded connection until either side closes it.
    func serve(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, head: HTTPRequest, context: GatewayRequestContext, route: CompiledRoute,
        send: @escaping BridgedSession.Send
    ) async {
        defer { sessions.release() }
        // Each message is written by the task that has it (an answer's, the session stream's),
        // not passed to a writer task: a session keeps every task of its own for its whole life.
        // Once the socket is gone a write fails, and there is nobody left to tell.
        let session = BridgedSession(
            id: MCPSessionID.mint(), router: route.router.name, owner: context.caller?.claims.sub, mcpPath: route.router.mcpPath,
            streamHead: head, streamContext: context.forInnerRequest(),
            outbound: .init(deliver: { message in try? await outbound.write(.text(String(buffer: message))) }, finish: {}),
            send: send, transport: "WebSocket"
        )
        context.logger.debug("WebSocket session opened", metadata: ["router": "\(route.router.name)", "session": "\(MCPSessionID.logged(session.id))"])
        defer { session.close() }
        do {
            for try await message in inbound.messages(maxSize: route.maxRequestBodyBytes) {
                let body: ByteBuffer = switch message {
                case .text(let text): ByteBuffer(string: text)
                case .binary(let bytes): bytes
                }
                do {
                    for single in try LegacySSEClients.split(body) { session.dispatch(single, head: head) }
                } catch {
                    await session.outbound.deliver(JSONRPCErrorResponse.make(rawID: nil, code: JSONRPCErrorResponse.invalidRequest, message: "Invalid Request: \(error.message)"))
                }
            }
        } catch {
            context.logger.debug("WebSocket session ended by an error", metadata: ["error": "\(error)"])
        }
    }
}

extension GatewayPipeline {
    /// Whether a WebSocket upgrade request may become an MCP session: the stages up to
    /// authentication run on it as on any request; anything they refuse, and anything that is
    /// not an MCP endpoint, is left to the pipeline to answer as an ordinary request.
    func webSocketUpgrade(_ head: HTTPRequest, channel: any Channel, logger: Logger) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let (credentialed, offersMCP, offersAny) = WebSocketClients.credentialed(head)
        // A client naming subprotocols must name `mcp` among them.
        guard offersMCP || !offersAny else { return .dontUpgrade }
        let request = Request(head: credentialed, body: RequestBody(buffer: ByteBuffer()))
        var context = GatewayRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger))
        clientAddressing.apply(request, &context)
        do {
            if try await frontDoor.answer(request, context: context) != nil { return .dontUpgrade }
            try routeMatching.apply(request, &context)
            guard let route = context.route, context.legacyEndpoint == nil else { throw GatewayError.notMCPEndpoint(router: context.route?.router.name ?? "", mcpPath: context.route?.router.mcpPath ?? "") }
            try requestChecks.apply(request, context)
            try await authentication.apply(request, &context)
            guard webSockets.sessions.admit() else { throw GatewayError.atCapacity(what: "WebSocket sessions", limit: webSockets.sessions.limit) }
            context.logger.info("WebSocket upgrade", metadata: [
                "router": "\(route.router.name)", "user": "\(context.caller?.claims.login ?? "")", "ip": "\(context.clientIP ?? "")",
            ])
            var headers = HTTPFields()
            if offersMCP { headers[.secWebSocketProtocol] = WebSocketClients.subprotocol }
            let accepted = context
            return .upgrade(headers) { [self] inbound, outbound, _ in
                await webSockets.serve(inbound: inbound, outbound: outbound, head: credentialed, context: accepted, route: route, send: bridgedSend)
            }
        } catch let error as GatewayError {
            // The WebSocket library answers every refused upgrade with an empty 400; the reason
            // (what the same request would have been answered over HTTP) goes to the log.
            context.logger.info("WebSocket upgrade refused", metadata: [
                "path": "\(head.path ?? "")", "status": "\(error.status.code)", "reason": "\(error.reason)", "ip": "\(context.clientIP ?? "")",
            ])
            return .dontUpgrade
        } catch {
            context.logger.info("WebSocket upgrade refused", metadata: ["path": "\(head.path ?? "")", "error": "\(error)"])
            return .dontUpgrade
        }
    }
}
