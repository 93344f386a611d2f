import GatewayStdio
import GatewayUpstream
import MCPTransport
import HTTPTypes
import Hummingbird
import MCPMessages

/// Stage 6: the MCP call read once: a POST body up to the router's limit (413 beyond it) and
/// strictly checked JSON (400), parsed as JSON-RPC, with the era, session id and method named, for
/// every later stage and the transports to look at rather than read again.
struct MCPCallParsing {
    func apply(_ request: inout Request, _ context: inout GatewayRequestContext) async throws(GatewayError) {
        guard let route = context.route else { throw .pipelineOrder(stage: "MCPCallParsing") }
        var body: ByteBuffer?
        if request.method == .post {
            body = try await RequestBodyReader.read(&request, limit: route.maxRequestBodyBytes)
        }
        let call = MCPCall(protocolVersion: request.headers[MCPHeaders.protocolVersion], sessionID: request.headers[MCPHeaders.sessionID], body: body)
        context.call = call
        context.record?.update { fields in
            fields.call = call
            fields.mcpMethod = call.method
            if call.method == "tools/call" { fields.tool = call.target }
        }
    }
}
