import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayStore
import GatewayAudit
import GatewayConfig
import HTTPTypes
import Hummingbird
import MCPMessages
import NIOCore
import Synchronization

/// The `mcp.request` line of the audit log: written when the response has been sent (so it has
/// the bytes sent and, for a JSON-RPC error answer, its code), from what the stages recorded.
struct RequestAudit: Sendable {
    let sink: any AuditSink
    let arguments: AuditConfiguration.Arguments
    let redactKeys: [String]

    /// `response` with its body counted; the record is written once the body is done.
    func auditing(_ response: Response, request: Request, record: RequestRecord.Fields, clientIP: String?, started: ContinuousClock.Instant) -> Response {
        guard let route = record.route else { return response }
        var response = response
        let tally = BodyTally()
        let original = response.body
        let status = response.status
        let contentType = response.headers[.contentType] ?? ""
        let createdSession = response.headers[HTTPField.Name("Mcp-Session-Id")!]
        let method = request.method.rawValue
        response.body = ResponseBody(contentLength: original.contentLength) { writer in
            defer {
                sink.record(event(route: route, record: record, method: method, status: status, contentType: contentType, tally: tally, createdSession: createdSession,
                                  clientIP: clientIP, elapsed: ContinuousClock.now - started))
                // Sessions begin with an answer that hands out an id, and end with a DELETE.
                let sessionOf: (String) -> AuditEvent.Value = { .string(String(ClientRegistry.hash($0).prefix(16))) }
                if let createdSession, record.call?.sessionID == nil, (200..<300).contains(status.code) {
                    sink.record(AuditEvent("session.started", [
                        ("session", sessionOf(createdSession)), ("router", .string(route.router.name)), ("user", record.caller.map { .string($0.claims.login) }),
                    ]))
                }
                if method == "DELETE", let ended = record.call?.sessionID, (200..<300).contains(status.code) {
                    sink.record(AuditEvent("session.ended", [
                        ("session", sessionOf(ended)), ("router", .string(route.router.name)), ("user", record.caller.map { .string($0.claims.login) }),
                    ]))
                }
            }
            try await original.write(writer.map { buffer in
                tally.add(buffer)
                return buffer
            })
        }
        return response
    }

    private func event(
        route: CompiledRoute, record: RequestRecord.Fields, method: String, status: HTTPResponse.Status, contentType: String, tally: BodyTally,
        createdSession: String?, clientIP: String?, elapsed: Duration
    ) -> AuditEvent {
        let call = record.call
        let mcpMethod = call?.method
        let target = call?.target
        let session = (call?.sessionID ?? createdSession).map { String(ClientRegistry.hash($0).prefix(16)) }
        let transport: String = switch route.upstream {
        case .http: "http"
        case .stdio: "stdio"
        }
        var argumentsValue: AuditEvent.Value?
        if mcpMethod == "tools/call", arguments != .none, let raw = call?.message?.value(at: ["params", "arguments"]) {
            switch arguments {
            case .full: argumentsValue = .json(raw)
            case .redacted: argumentsValue = AuditArguments.redacted(raw, keys: redactKeys).map(AuditEvent.Value.json)
            case .none: argumentsValue = nil
            }
        }
        let (bytesOut, errorCode) = tally.summary(contentType: contentType)
        return AuditEvent("mcp.request", [
            ("router", .string(route.router.name)),
            ("service", .string(route.router.service)),
            ("transport", .string(transport)),
            ("http_method", .string(method)),
            ("protocol_version", (call?.protocolVersion ?? call?.message?.string(at: ["params", "protocolVersion"])).map(AuditEvent.Value.string)),
            ("mcp_method", mcpMethod.map(AuditEvent.Value.string)),
            ("tool", mcpMethod == "tools/call" ? target.map(AuditEvent.Value.string) : nil),
            ("resource_uri", mcpMethod == "resources/read" ? target.map(AuditEvent.Value.string) : nil),
            ("prompt", mcpMethod == "prompts/get" ? target.map(AuditEvent.Value.string) : nil),
            ("session", session.map(AuditEvent.Value.string)),
            ("user", record.caller.map { .string($0.claims.login) }),
            ("subject", record.caller.map { .string($0.claims.sub) }),
            ("client_id", record.caller.map { .string($0.claims.client_id) }),
            ("ip", clientIP.map(AuditEvent.Value.string)),
            ("status", .integer(Int64(status.code))),
            ("error_code", errorCode.map { .integer(Int64($0)) }),
            ("duration_ms", .integer(elapsed.wholeMilliseconds)),
            ("bytes_in", .integer(Int64(call?.body?.readableBytes ?? 0))),
            ("bytes_out", .integer(bytesOut)),
            ("arguments", argumentsValue),
        ])
    }
}

/// Bytes sent, and the last message for the JSON-RPC error code (the answer is last).
final class BodyTally: Sendable {
    private struct State {
        var bytes: Int64 = 0
        var last = ByteBuffer()
    }

    private let state = Mutex(State())
    /// A large answer's tail is enough to find an error object (errors are small).
    private static let keep = 64 * 1024

    func add(_ buffer: ByteBuffer) {
        state.withLock { state in
            state.bytes += Int64(buffer.readableBytes)
            if buffer.readableBytes <= Self.keep { state.last = buffer } else { state.last = ByteBuffer() }
        }
    }

    /// Bytes sent, and the error code when the final message is a JSON-RPC error.
    func summary(contentType: String) -> (Int64, Int?) {
        let (bytes, last) = state.withLock { ($0.bytes, $0.last) }
        var message = last
        if contentType.lowercased().hasPrefix("text/event-stream") {
            // The last `data:` line of the last chunk written (one event per chunk).
            let text = String(buffer: last)
            guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("data:") }) else { return (bytes, nil) }
            message = ByteBuffer(string: String(line.dropFirst(5)).trimmingCharacters(in: .whitespaces))
        } else if !contentType.lowercased().hasPrefix("application/json") {
            return (bytes, nil)
        }
        guard let parsed = try? JSONRPCMessage(parsing: message), parsed.kind == .errorResponse,
              let code = parsed.value(at: ["error", "code"]).flatMap({ Int($0) })
        else { return (bytes, nil) }
        return (bytes, code)
    }
}
