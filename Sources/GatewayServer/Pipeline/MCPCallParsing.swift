import GatewayStdio
import GatewayUpstream
import MCPTransport
import HTTPTypes
import Hummingbird
import MCPMessages
import MCPTranslation
import Synchronization
import Logging
import GatewayAuth
import AuthorizationServer

/// Stage 6: the MCP call read once: a POST body up to the router's limit (413 beyond it) and
/// strictly checked JSON (400), parsed as JSON-RPC, with the era, session id and method named, for
/// every later stage and the transports to look at rather than read again.
struct MCPCallParsing {
    /// Clients already told about (logged) for sending a version header the body contradicts.
    var versionDisagreements = VersionDisagreements()

    func apply(_ request: inout Request, _ context: inout GatewayRequestContext) async throws(GatewayError) {
        guard let route = context.route else { throw .pipelineOrder(stage: "MCPCallParsing") }
        var body: ByteBuffer?
        if request.method == .post {
            body = try await RequestBodyReader.read(&request, limit: route.maxRequestBodyBytes)
        }
        let header = request.headers.value(of: MCPHeaders.protocolVersion)
        var call = MCPCall(protocolVersion: header, sessionID: request.headers.value(of: MCPHeaders.sessionID), body: body)
        // A 2026-07-28 body under a session-based version header, or none (Claude Code sends
        // `2025-11-25` with a 2026-07-28 body): the body says what the request is, and the header
        // is made to agree, so the era, the checks and the upstream all read one version. A
        // version the gateway does not know still gets the version negotiation's answer.
        if let bodyVersion = call.message?.string(at: ModernProtocol.protocolVersionPath),
           MCPVersions.modern.contains(bodyVersion), header.map({ MCPVersions.sessionBased.contains($0) }) ?? true
        {
            var head = request.head
            head.headerFields[MCPHeaders.protocolVersion] = bodyVersion
            request = Request(head: head, body: request.body)
            call = MCPCall(protocolVersion: bodyVersion, sessionID: call.sessionID, body: body)
            let client = context.caller?.claims.client_id ?? context.clientIP ?? ""
            if versionDisagreements.firstTime(client) {
                context.logger.notice("the MCP-Protocol-Version header disagrees with the body's version: the body's is used (logged once per client)", metadata: [
                    "header": "\(header ?? "none")", "body": "\(bodyVersion)", "client": "\(client)",
                ])
            }
        }
        context.call = call
        context.record?.update { fields in
            fields.call = call
            fields.mcpMethod = call.method
            if call.method == "tools/call" { fields.tool = call.target }
        }
    }
}

/// Who has been told once (bounded: the set starts over past 10 000 clients).
final class VersionDisagreements: Sendable {
    private let seen = Mutex<Set<String>>([])

    func firstTime(_ client: String) -> Bool {
        seen.withLock { seen in
            if seen.count >= 10_000 { seen.removeAll() }
            return seen.insert(client).inserted
        }
    }
}
