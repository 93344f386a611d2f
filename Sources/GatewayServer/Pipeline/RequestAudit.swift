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
/// the answer (the last message). A class: the fast relay asks for it several times per request,
/// and a reference is one retain where a copy of the audit settings would be several.
final class ResponseObserver: Sendable {
    let audit: RequestAudit?
    let metrics: GatewayMetrics?

    init(audit: RequestAudit?, metrics: GatewayMetrics?) {
        self.audit = audit
        self.metrics = metrics
    }

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
                var handles = GatewayMetrics.LocalHandles()
                if let metrics { Self.measure(metrics, route: route, record: record, sent: sent, handles: &handles) }
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
    /// `handles`: the connection's (see `GatewayMetrics.LocalHandles`).
    func observed(route: CompiledRoute, record: RequestRecord.Fields, sent: RequestAudit.Sent, handles: inout GatewayMetrics.LocalHandles) {
        audit?.record(route: route, record: record, sent: sent)
        if let metrics { Self.measure(metrics, route: route, record: record, sent: sent, handles: &handles) }
    }

    static func measure(_ metrics: GatewayMetrics, route: CompiledRoute, record: RequestRecord.Fields, sent: RequestAudit.Sent, handles: inout GatewayMetrics.LocalHandles) {
        let router = route.router.name
        if let mcpMethod = record.call?.method {
            let failed = sent.errorCode.map { String($0) } ?? (sent.status.code >= 400 ? String(sent.status.code) : nil)
            let tool = mcpMethod == "tools/call" ? record.call?.target : nil
            metrics.operation(method: mcpMethod, tool: tool, router: router, errorType: failed, duration: sent.elapsed, handles: &handles)
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
        let call = record.call
        let mcpMethod = call?.method
        // What takes work is done before the line is written into the shared batch.
        let createdSession = sent.createdSession.flatMap { call?.sessionID == nil ? $0 : nil }
        let session = (call?.sessionID ?? sent.createdSession).map(Self.sessionHash)
        let target = call?.target
        // Only `initialize` names its version in the body; other requests say it in the header.
        let protocolVersion = call?.protocolVersion ?? (mcpMethod == "initialize" ? call?.message?.string(at: ["params", "protocolVersion"]) : nil)
        let argumentsJSON = mcpMethod == "tools/call" ? arguments(of: call) : nil
        let caller = record.caller
        sink.recordLine { out in
            AuditLine.start("mcp.request", time: Date(), to: &out)
            AuditLine.field("trace_id", record.traceID, to: &out)
            AuditLine.encoded(route.auditFields, to: &out)
            AuditLine.field("http_method", sent.method, to: &out)
            AuditLine.field("protocol_version", protocolVersion, to: &out)
            AuditLine.field("mcp_method", mcpMethod, to: &out)
            switch mcpMethod {
            case "tools/call": AuditLine.field("tool", target, to: &out)
            case "resources/read": AuditLine.field("resource_uri", target, to: &out)
            case "prompts/get": AuditLine.field("prompt", target, to: &out)
            default: break
            }
            AuditLine.field("session", session, to: &out)
            if let caller {
                AuditLine.field("user", caller.claims.login, to: &out)
                AuditLine.field("subject", caller.claims.sub, to: &out)
                AuditLine.field("client_id", caller.claims.client_id, to: &out)
            }
            AuditLine.field("ip", sent.clientIP, to: &out)
            AuditLine.field("status", Int64(sent.status.code), to: &out)
            AuditLine.field("error_code", sent.errorCode.map(Int64.init), to: &out)
            AuditLine.field("duration_ms", sent.elapsed.wholeMilliseconds, to: &out)
            AuditLine.field("bytes_in", Int64(call?.body?.readableBytes ?? 0), to: &out)
            AuditLine.field("bytes_out", sent.bytesOut, to: &out)
            AuditLine.field("arguments", json: argumentsJSON, to: &out)
            AuditLine.end(to: &out)
        }
        // Sessions begin with an answer that hands out an id, and end with a DELETE.
        guard (200..<300).contains(sent.status.code) else { return }
        if let createdSession {
            sink.record(AuditEvent("session.started", [
                ("session", .string(Self.sessionHash(createdSession))), ("router", .string(route.router.name)), ("user", caller.map { .string($0.claims.login) }),
            ]))
        }
        if sent.method == "DELETE", let ended = call?.sessionID {
            sink.record(AuditEvent("session.ended", [
                ("session", .string(Self.sessionHash(ended))), ("router", .string(route.router.name)), ("user", caller.map { .string($0.claims.login) }),
            ]))
        }
    }

    /// A session as the audit log names it: a short hash, never the id.
    private static func sessionHash(_ id: String) -> String {
        String(ClientRegistry.hash(id).prefix(16))
    }

    /// The `arguments` field of a `tools/call` as `audit.arguments` says (nil: left out).
    private func arguments(of call: MCPCall?) -> String? {
        guard arguments != .none, let raw = call?.message?.value(at: ["params", "arguments"]) else { return nil }
        switch arguments {
        case .full: return raw
        case .redacted: return AuditArguments.redacted(raw, keys: redactKeys)
        case .none: return nil
        }
    }
}

/// Bytes sent, and the last message for the JSON-RPC error code (the answer is last). The full
/// pipeline's response body is written from a task: `BodyTally` is this behind a lock; the fast
/// relay keeps one in its loop-bound state.
struct ResponseTally {
    private(set) var bytes: Int64 = 0
    private var last = ByteBuffer()
    /// A large answer's tail is enough to find an error object (errors are small).
    private static let keep = 64 * 1024

    mutating func add(_ buffer: ByteBuffer) {
        bytes += Int64(buffer.readableBytes)
        last = buffer.readableBytes <= Self.keep ? buffer : ByteBuffer()
    }

    /// Bytes sent, and the error code when the final message is a JSON-RPC error.
    func summary(contentType: String) -> (Int64, Int?) {
        (bytes, BodyTally.errorCode(last, contentType: contentType))
    }
}

final class BodyTally: Sendable {
    private let state = Mutex(ResponseTally())

    func add(_ buffer: ByteBuffer) {
        state.withLock { $0.add(buffer) }
    }

    /// Bytes sent, and the error code when the final message is a JSON-RPC error.
    func summary(contentType: String) -> (Int64, Int?) {
        state.withLock { $0 }.summary(contentType: contentType)
    }

    /// The JSON-RPC error code of `last` (the last chunk written) when it is an error answer.
    static func errorCode(_ last: ByteBuffer, contentType: String) -> Int? {
        // Most answers are results: only one that mentions "error" is worth parsing.
        guard mentionsError(last) else { return nil }
        var message = last
        if MediaTypes.isEventStream(contentType) {
            // The last `data:` line of the last chunk written (one event per chunk).
            let text = String(buffer: last)
            guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("data:") }) else { return nil }
            message = ByteBuffer(string: String(line.dropFirst(5)).trimmingCharacters(in: .whitespaces))
        } else if !MediaTypes.isJSON(contentType) {
            return nil
        }
        guard let parsed = try? JSONRPCMessage(parsing: message), parsed.kind == .errorResponse,
              let code = parsed.value(at: ["error", "code"]).flatMap({ Int($0) })
        else { return nil }
        return code
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
