package import MCPTransport
package import GatewayAuth
package import AuthorizationServer
import Synchronization
import AsyncHTTPClient
import GatewayConfig
package import HTTPTypes
package import Hummingbird
import Logging
import MCPMessages
package import NIOCore
package import NIOHTTP1

/// Relays one MCP Streamable HTTP exchange to an HTTP upstream. Request bodies are single
/// JSON-RPC messages, read up to the route's limit (so an oversized one is refused with 413 before
/// the upstream sees a byte); response bodies are relayed chunk by chunk as they arrive.
package struct HTTPProxy: Sendable {
    /// Session ids the upstream hands out are bound to the router and caller that created them:
    /// presented through another router or by another caller, a session is not found (404).
    package let bindings: SessionBindings
    /// Standalone GET streams end when the gateway starts shutting down.
    package let drain: ShutdownDrain
    package static let sessionHeader = MCPHeaders.sessionID

    /// Signs the callers' identity for services with `identityToken`.
    package let identityTokens: IdentityTokens?

    package init(bindings: SessionBindings, drain: ShutdownDrain, identityTokens: IdentityTokens? = nil) {
        self.bindings = bindings
        self.drain = drain
        self.identityTokens = identityTokens
    }

    /// `translator`: where a session the gateway bridged (a session-based client of a
    /// 2026-07-28-only upstream) that this process does not hold goes.
    package func forward(_ exchange: MCPExchange, to upstream: HTTPUpstream, translator: ModernHTTPTranslator? = nil) async throws(GatewayError) -> Response {
        let (request, context, route, caller) = (exchange.request, exchange.context, exchange.route, exchange.caller)
        let sessionID = exchange.call.sessionID
        let owner = exchange.owner
        if let sessionID {
            let record: SessionRecord
            do { record = try await bindings.check(sessionID, owner: owner) } catch { throw GatewayError(error) }
            if record.kind == "bridged", let translator { return try await translator.bridgeOrphan(exchange, upstream: upstream) }
        }
        // Read (up to the route's limit) and checked by `MCPCallParsing`.
        let body = exchange.call.body
        let identity = await Self.identityToken(identityTokens, upstream: upstream, route: route, caller: caller)
        let headers = Self.upstreamHeaders(for: request, context: context, upstream: upstream, caller: caller, identityToken: identity)
        let upstreamResponse: HTTPClientResponse
        let method = HTTPMethod(rawValue: request.method.rawValue)
        let query = request.uri.query
        let logger = context.logger
        let requestBody = body
        do {
            // The client hanging up before the upstream answers ends the upstream request too
            // (in 2026-07-28, closing the stream is how a client cancels).
            upstreamResponse = try await Self.cancellingOnClose(of: context.channel) {
                try await upstream.send(method: method, query: query, headers: headers, body: requestBody, logger: logger)
            }
        } catch let error as UpstreamError {
            throw .upstream(error)
        } catch {
            throw .upstream(UpstreamError(.protocolFailure, service: upstream.service.name, detail: "\(error)"))
        }

        var fields = HeaderPolicy.clientResponseHeaders(from: upstreamResponse.headers)
        if let created = fields[Self.sessionHeader], created != sessionID {
            do { try await bindings.bind(created, to: owner, details: SessionDetails(service: upstream.service.name, kind: "http")) } catch { throw GatewayError(error) }
        }
        if request.method == .delete, let sessionID, (200..<300).contains(upstreamResponse.status.code) {
            await bindings.unbind(sessionID)
        }
        let isEventStream = MediaTypes.isEventStream(fields[.contentType])
        let upstreamBody = upstreamResponse.body
        let responseBody: ResponseBody
        if isEventStream {
            // The upstream's own Content-Type stays; only the anti-buffering headers are added.
            fields[SSEHeaders.accelBuffering] = "no"
            fields[.connection] = "close"
            if fields[.cacheControl] == nil { fields[.cacheControl] = "no-cache" }
            let clientRequest = request
            // A standalone GET stream and a 2026-07-28 `subscriptions/listen` stream answer no
            // pending request: they must not hold a shutdown open.
            let standalone = request.method == .get || exchange.call.method == "subscriptions/listen"
            let drain = standalone ? self.drain : nil
            // An SSE stream can sit idle for hours: watch the client's side of the connection so a
            // disconnect cancels the upstream request at once (in 2026-07-28, closing *is* cancel).
            responseBody = ResponseBody { writer in
                try await clientRequest.cancellingOnInboundClose {
                    if let drain {
                        _ = try await drain.runUntilDrained {
                            for try await chunk in upstreamBody {
                                try await writer.write(chunk)
                            }
                        }
                    } else {
                        for try await chunk in upstreamBody {
                            try await writer.write(chunk)
                        }
                    }
                }
                try await writer.finish(nil)
            }
        } else {
            responseBody = ResponseBody(asyncSequence: upstreamBody)
        }
        return Response(status: .init(code: Int(upstreamResponse.status.code)), headers: fields, body: responseBody)
    }

    /// The caller's signed identity for `upstream`, when it asks for one (`identityToken`).
    package static func identityToken(_ tokens: IdentityTokens?, upstream: HTTPUpstream, route: any TransportRoute, caller: VerifiedCaller?) async -> String? {
        guard let tokens, upstream.service.identityToken != nil, let caller, let settings = upstream.service.identityToken else { return nil }
        return await tokens.token(
            subject: caller.claims.sub, login: caller.claims.login, clientID: caller.claims.client_id, router: route.router.name,
            audience: upstream.service.url, ttl: settings.ttl
        )
    }

    /// The headers sent upstream for `request`: hop-by-hop ones removed, `X-Forwarded-*` set by the
    /// gateway, identity headers and the service's own added.
    package static func upstreamHeaders(
        for request: Request, context: TransportContext, upstream: HTTPUpstream, caller: VerifiedCaller?, identityToken: String? = nil
    ) -> HTTPHeaders {
        HeaderPolicy.upstreamRequestHeaders(
            // No token passthrough: the gateway's token and cookies stay at the gateway. Identity
            // header names are never taken from a client; on protected routes neither are the
            // client's credentials (`upstream.headerRules`).
            from: request.headers, rules: upstream.headerRules, identity: caller.map(callerIdentity), identityToken: identityToken,
            // The gateway's own cookies (browser binding) never leave it, whatever the route.
            removingCookies: gatewayCookiePrefixes, clientAddress: context.clientIP, forwardedProto: context.forwardedProto, forwardedHost: request.head.authority
        )
    }

    /// The gateway's cookies (browser bindings): never sent to an upstream.
    static let gatewayCookiePrefixes = ["mcpgw-", "__Host-mcpgw-"]

    /// The caller as the identity headers tell it.
    static func callerIdentity(_ caller: VerifiedCaller) -> CallerIdentity {
        CallerIdentity(login: caller.claims.login, clientID: caller.claims.client_id, email: caller.claims.email)
    }

    /// The fast relay's upstream request, head and body, as `upstreamHeaders` and
    /// `HTTPUpstream.addCredentials` make its headers (`UpstreamRequestWriter.writePost`).
    /// `body` nil: a GET (a session's stream).
    package static func fastUpstreamRequest(
        for request: Request, context: TransportContext, upstream: HTTPUpstream, caller: VerifiedCaller?,
        target: RelayTarget, body: ByteBuffer?, into buffer: inout ByteBuffer
    ) throws(UpstreamRequestWriter.Refused) {
        try UpstreamRequestWriter.writePost(
            method: body == nil ? "GET" : "POST", target: upstream.relayRequestTarget(query: request.uri.query), fields: request.headers,
            rules: upstream.headerRules, identity: caller.map(callerIdentity), removingCookies: gatewayCookiePrefixes, clientAddress: context.clientIP,
            forwardedProto: context.forwardedProto, forwardedHost: request.head.authority, credentials: upstream.service.credentials?.headerFields ?? [],
            host: target.hostHeader, body: body, into: &buffer
        )
    }

    /// Runs `operation`, cancelling it if the client hangs up first.
    package static func cancellingOnClose<Value: Sendable>(
        of channel: any Channel, _ operation: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        guard let watcher = InboundCloseWatcher.watcher(for: channel) else { return try await operation() }
        let task = Task { try await operation() }
        let token = watcher.onClose { task.cancel() }
        defer { watcher.cancel(token) }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }
}

