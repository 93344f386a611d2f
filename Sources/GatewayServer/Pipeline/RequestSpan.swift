import AuthorizationServer
import GatewayTracing
import Hummingbird
import Instrumentation
import Tracing
import MCPMessages
import MCPTransport
import HTTPTypes

/// `tracing:`: the server span of one request. An incoming W3C `traceparent` makes it a child of
/// the caller's trace; the stages' spans (token check, upstream, store) are its children through
/// the task-local context. Named and labelled after the MCP call once the stages have parsed it
/// (the OpenTelemetry MCP semantic conventions: `{mcp.method.name} {target}`).
enum RequestSpan {
    static func around(_ request: Request, record: RequestRecord, clientIP: String?, _ answer: () async -> Response) async -> Response {
        var parent = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(request.headers, into: &parent, using: HTTPFieldsExtractor())
        let span = startSpan("\(request.method.rawValue) \(request.uri.path)", context: parent, ofKind: .server)
        record.update { $0.traceID = GatewayTracing.traceID(of: span.context) }
        let response = await ServiceContext.withValue(span.context) { await answer() }
        let fields = record.current
        span.attributes["http.request.method"] = request.method.rawValue
        span.attributes["url.path"] = request.uri.path
        span.attributes["http.response.status_code"] = Int(response.status.code)
        if let clientIP { span.attributes["client.address"] = clientIP }
        if let router = fields.router { span.attributes["mcp_gateway.router"] = router }
        if let user = fields.user { span.attributes["enduser.id"] = user }
        if let call = fields.call, let method = call.method {
            span.operationName = [method, call.target].compactMap { $0 }.joined(separator: " ")
            span.attributes["mcp.method.name"] = method
            if method == "tools/call", let tool = call.target { span.attributes["gen_ai.tool.name"] = tool }
            if let version = call.protocolVersion { span.attributes["mcp.protocol.version"] = version }
            // The id's value: a string id without its quotes, a number as written.
            if let id = call.message?.string(at: ["id"]) ?? call.rawID { span.attributes["jsonrpc.request.id"] = String(id.prefix(RequestAudit.maxRequestIDLength)) }
            if let session = call.sessionID ?? response.headers[MCPHeaders.sessionID] {
                // Hashed, as in the audit log: the id itself lets its holder use the session.
                span.attributes["mcp.session.id"] = String(ClientRegistry.hash(session).prefix(16))
            }
        }
        if response.status.code >= 500 { span.setStatus(SpanStatus(code: .error)) }
        span.end()
        return response
    }
}
