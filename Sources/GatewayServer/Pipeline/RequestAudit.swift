import AuthorizationServer
import Foundation
import GatewayAuth
import GatewayStore
import GatewayAudit
import GatewayConfig
import GatewayMetrics
import HTTPTypes
import Hummingbird
import MCPMessages
import NIOCore
import Synchronization

/// What happens once a routed request's response has been sent: its audit line and its metrics.
/// The body is wrapped once for both, to count the bytes sent and read the JSON-RPC error code of
/// the answer (the last message).
struct ResponseObserver: Sendable {
    let audit: RequestAudit?
    let metrics: GatewayMetrics?

    /// `response` with its body counted; the observations are made once the body is done.
    func observing(_ response: Response, request: Request, record: RequestRecord.Fields, clientIP: String?, started: ContinuousClock.Instant) -> Response {
        metrics?.request(router: record.route?.router.name ?? "", status: Int(response.status.code))
        guard let route = record.route else { return response }
        var response = response
        let tally = BodyTally()
        let original = response.body
        let status = response.status
        let contentType = response.headers[.contentType] ?? ""
        let createdSession = response.headers[HTTPField.Name("Mcp-Session-Id")!]
        let method = request.method.rawValue
        let (audit, metrics) = (self.audit, self.metrics)
        response.body = ResponseBody(contentLength: original.contentLength) { writer in
            defer {
                let elapsed = ContinuousClock.now - started
                let (bytesOut, errorCode) = tally.summary(contentType: contentType)
                let sent = RequestAudit.Sent(
                    method: method, status: status, bytesOut: bytesOut, errorCode: errorCode, createdSession: createdSession, clientIP: clientIP, elapsed: elapsed
                )
                audit?.record(route: route, record: record, sent: sent)
                if let metrics { Self.measure(metrics, route: route, record: record, sent: sent) }
            }
            try await original.write(writer.map { buffer in
                tally.add(buffer)
                return buffer
            })
        }
        return response
    }

    /// The observations of a request the fast relay answered, once its answer is done: the same
    /// audit line and metrics as `observing` makes for the full pipeline's.
    func observed(route: CompiledRoute, record: RequestRecord.Fields, sent: RequestAudit.Sent) {
        audit?.record(route: route, record: record, sent: sent)
        if let metrics { Self.measure(metrics, route: route, record: record, sent: sent) }
    }

    static func measure(_ metrics: GatewayMetrics, route: CompiledRoute, record: RequestRecord.Fields, sent: RequestAudit.Sent) {
        let router = route.router.name
        if let mcpMethod = record.call?.method {
            let failed = sent.errorCode.map { String($0) } ?? (sent.status.code >= 400 ? String(sent.status.code) : nil)
            metrics.operation(method: mcpMethod, tool: record.call?.target, router: router, errorType: failed, duration: sent.elapsed)
        }
        guard (200..<300).contains(sent.status.code) else { return }
        if sent.method == "DELETE", let ended = record.call?.sessionID {
            metrics.sessionEnded(router: router, id: ended)
        } else if let id = record.call?.sessionID ?? sent.createdSession {
            metrics.sessionUsed(router: router, id: id)
        }
    }
}

/// The `mcp.request` line of the audit log, from what the stages recorded and what was sent, and
/// the `session.started` / `session.ended` events.
struct RequestAudit: Sendable {
    let sink: any AuditSink
    let arguments: AuditConfiguration.Arguments
    let redactKeys: [String]

    /// What the response turned out to be once its body was sent.
    struct Sent {
        let method: String
        let status: HTTPResponse.Status
        let bytesOut: Int64
        let errorCode: Int?
        let createdSession: String?
        let clientIP: String?
        let elapsed: Duration
    }

    func record(route: CompiledRoute, record: RequestRecord.Fields, sent: Sent) {
        sink.record(event(route: route, record: record, sent: sent))
        // Sessions begin with an answer that hands out an id, and end with a DELETE.
        let sessionOf: (String) -> AuditEvent.Value = { .string(String(ClientRegistry.hash($0).prefix(16))) }
        guard (200..<300).contains(sent.status.code) else { return }
        if let createdSession = sent.createdSession, record.call?.sessionID == nil {
            sink.record(AuditEvent("session.started", [
                ("session", sessionOf(createdSession)), ("router", .string(route.router.name)), ("user", record.caller.map { .string($0.claims.login) }),
            ]))
        }
        if sent.method == "DELETE", let ended = record.call?.sessionID {
            sink.record(AuditEvent("session.ended", [
                ("session", sessionOf(ended)), ("router", .string(route.router.name)), ("user", record.caller.map { .string($0.claims.login) }),
            ]))
        }
    }

    private func event(route: CompiledRoute, record: RequestRecord.Fields, sent: Sent) -> AuditEvent {
        let call = record.call
        let mcpMethod = call?.method
        let target = call?.target
        let session = (call?.sessionID ?? sent.createdSession).map { String(ClientRegistry.hash($0).prefix(16)) }
        let transport: String = switch route.upstream {
        case .http: "http"
        case .stdio: "stdio"
        // An OAuth-protected HTTP service is served through a one-member passthrough group.
        case .group(let group): group.passthrough ? "http" : "group"
        }
        var argumentsValue: AuditEvent.Value?
        if mcpMethod == "tools/call", arguments != .none, let raw = call?.message?.value(at: ["params", "arguments"]) {
            switch arguments {
            case .full: argumentsValue = .json(raw)
            case .redacted: argumentsValue = AuditArguments.redacted(raw, keys: redactKeys).map(AuditEvent.Value.json)
            case .none: argumentsValue = nil
            }
        }
        return AuditEvent("mcp.request", [
            ("trace_id", record.traceID.map(AuditEvent.Value.string)),
            ("router", .string(route.router.name)),
            ("service", .string(route.router.service)),
            ("transport", .string(transport)),
            ("http_method", .string(sent.method)),
            ("protocol_version", (call?.protocolVersion ?? call?.message?.string(at: ["params", "protocolVersion"])).map(AuditEvent.Value.string)),
            ("mcp_method", mcpMethod.map(AuditEvent.Value.string)),
            ("tool", mcpMethod == "tools/call" ? target.map(AuditEvent.Value.string) : nil),
            ("resource_uri", mcpMethod == "resources/read" ? target.map(AuditEvent.Value.string) : nil),
            ("prompt", mcpMethod == "prompts/get" ? target.map(AuditEvent.Value.string) : nil),
            ("session", session.map(AuditEvent.Value.string)),
            ("user", record.caller.map { .string($0.claims.login) }),
            ("subject", record.caller.map { .string($0.claims.sub) }),
            ("client_id", record.caller.map { .string($0.claims.client_id) }),
            ("ip", sent.clientIP.map(AuditEvent.Value.string)),
            ("status", .integer(Int64(sent.status.code))),
            ("error_code", sent.errorCode.map { .integer(Int64($0)) }),
            ("duration_ms", .integer(sent.elapsed.wholeMilliseconds)),
            ("bytes_in", .integer(Int64(call?.body?.readableBytes ?? 0))),
            ("bytes_out", .integer(sent.bytesOut)),
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
        // Most answers are results: only one that mentions "error" is worth parsing.
        guard Self.mentionsError(last) else { return (bytes, nil) }
        var message = last
        if MediaTypes.isEventStream(contentType) {
            // The last `data:` line of the last chunk written (one event per chunk).
            let text = String(buffer: last)
            guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("data:") }) else { return (bytes, nil) }
            message = ByteBuffer(string: String(line.dropFirst(5)).trimmingCharacters(in: .whitespaces))
        } else if !MediaTypes.isJSON(contentType) {
            return (bytes, nil)
        }
        guard let parsed = try? JSONRPCMessage(parsing: message), parsed.kind == .errorResponse,
              let code = parsed.value(at: ["error", "code"]).flatMap({ Int($0) })
        else { return (bytes, nil) }
        return (bytes, code)
    }

    private static let errorKey = Array(#""error""#.utf8)

    static func mentionsError(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { raw in
            let count = errorKey.count
            guard raw.count >= count else { return false }
            var index = 0
            while index <= raw.count - count {
                if raw[index] == UInt8(ascii: "\""), raw[index + 1] == UInt8(ascii: "e") {
                    var matched = 2
                    while matched < count, raw[index + matched] == errorKey[matched] { matched += 1 }
                    if matched == count { return true }
                }
                index += 1
            }
            return false
        }
    }
}
