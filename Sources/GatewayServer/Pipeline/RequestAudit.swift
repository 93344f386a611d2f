import AuthorizationServer
import Dispatch
import Foundation
import GatewayAuth
import GatewayStore
import GatewayAudit
import GatewayConfig
import GatewayMetrics
import HTTPTypes
import Hummingbird
import MCPMessages
import MCPTransport
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
        let createdSession = response.headers[MCPHeaders.sessionID]
        let method = request.method.rawValue
        let (audit, metrics) = (self.audit, self.metrics)
        response.body = ResponseBody(contentLength: original.contentLength) { writer in
            defer {
                let elapsed = (ContinuousClock.now - started).wholeNanoseconds
                let (bytesOut, errorCode) = tally.summary(contentType: contentType)
                let sent = RequestAudit.Sent(
                    method: method, status: status, bytesOut: bytesOut, errorCode: errorCode, createdSession: createdSession, clientIP: clientIP, elapsedNanoseconds: elapsed
                )
                var memo = ObservationMemo()
                audit?.record(route: route, caller: record.caller, call: record.call, traceID: record.traceID, sent: sent, memo: &memo)
                if let metrics { Self.measure(metrics, route: route, call: record.call, sent: sent, handles: &memo.metrics) }
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
    /// `memo`: the connection's. `head`: the answer's head was not counted yet (nor the
    /// upstream's time to it), it is with the rest.
    func observed(
        route: CompiledRoute, caller: VerifiedCaller?, call: MCPCall?, sent: RequestAudit.Sent, head: (service: String, upstreamSeconds: Double)?,
        memo: inout ObservationMemo
    ) {
        audit?.record(route: route, caller: caller, call: call, traceID: nil, sent: sent, memo: &memo)
        if let metrics { Self.measure(metrics, route: route, call: call, sent: sent, head: head, handles: &memo.metrics) }
    }

    /// The operation's duration, the session gauge, and with `head` the answer's count and the
    /// upstream's time to it (all under one lock).
    static func measure(
        _ metrics: GatewayMetrics, route: CompiledRoute, call: MCPCall?, sent: RequestAudit.Sent, head: (service: String, upstreamSeconds: Double)? = nil,
        handles: inout GatewayMetrics.LocalHandles
    ) {
        let router = route.router.name
        let method = call?.method
        let tool = method == "tools/call" ? call?.target : nil
        // The operation's `error_type`: the JSON-RPC error code, or the HTTP status of a failure.
        let errorType = sent.errorCode.map { String($0) } ?? (sent.status.code >= 400 ? String(sent.status.code) : nil)
        let seconds = Double(sent.elapsedNanoseconds) * 1e-9
        if let head {
            metrics.relayed(
                router: router, status: Int(sent.status.code), service: head.service, upstreamSeconds: head.upstreamSeconds,
                method: method, tool: tool, errorType: errorType, seconds: seconds, handles: &handles
            )
        } else if let method {
            metrics.operation(method: method, tool: tool, router: router, errorType: errorType, seconds: seconds, handles: &handles)
        }
        noteSession(metrics, router: router, call: call, sent: sent)
    }

    /// Sessions begin with an answer that hands out an id and end with a DELETE.
    private static func noteSession(_ metrics: GatewayMetrics, router: String, call: MCPCall?, sent: RequestAudit.Sent) {
        guard (200..<300).contains(sent.status.code) else { return }
        if sent.method == "DELETE", let ended = call?.sessionID {
            metrics.sessionEnded(router: router, id: ended)
        } else if let id = call?.sessionID ?? sent.createdSession {
            metrics.sessionUsed(router: router, id: id)
        }
    }
}

/// What a connection's observations reuse from its last request: the metric handles, and the
/// audit line's fields about what was asked and who asked (a connection serves one client,
/// usually with one token, often calling the same tool).
struct ObservationMemo {
    var metrics = GatewayMetrics.LocalHandles()
    fileprivate var auditedRequest: RequestAudit.AuditedRequest?
    fileprivate var auditedFields: [UInt8] = []
}

/// A point in time to measure a request's duration from: nanoseconds of the monotonic clock, whose
/// differences are plain integers (a `ContinuousClock` duration's parts take 128-bit arithmetic,
/// done several times per request for the audit line and the metrics).
struct Stopwatch {
    private let started = DispatchTime.now().uptimeNanoseconds

    var elapsedNanoseconds: Int64 {
        Int64(clamping: DispatchTime.now().uptimeNanoseconds &- started)
    }

    var elapsedSeconds: Double { Double(elapsedNanoseconds) * 1e-9 }
}

/// The `mcp.request` line of the audit log, from what the stages recorded and what was sent, and
/// the `session.started` / `session.ended` events.
final class RequestAudit: Sendable {
    let sink: any AuditSink
    let arguments: AuditConfiguration.Arguments
    let redactKeys: [String]

    /// A class: the observer reaches it on every request, and a copy of a value with an
    /// existential sink and a key list retained both, from every core, each time.
    init(sink: any AuditSink, arguments: AuditConfiguration.Arguments, redactKeys: [String]) {
        self.sink = sink
        self.arguments = arguments
        self.redactKeys = redactKeys
    }

    /// What the response turned out to be once its body was sent.
    struct Sent {
        let method: String
        let status: HTTPResponse.Status
        let bytesOut: Int64
        let errorCode: Int?
        let createdSession: String?
        let clientIP: String?
        let elapsedNanoseconds: Int64
    }

    func record(route: CompiledRoute, caller: VerifiedCaller?, call: MCPCall?, traceID: String?, sent: Sent, memo: inout ObservationMemo) {
        let mcpMethod = call?.method
        // What takes work is done before the line is written into the shared batch.
        let createdSession = sent.createdSession.flatMap { call?.sessionID == nil ? $0 : nil }
        // Only `initialize` names its version in the body; other requests say it in the header.
        let protocolVersion = call?.protocolVersion ?? (mcpMethod == "initialize" ? call?.message?.string(at: ["params", "protocolVersion"]) : nil)
        let argumentsJSON = mcpMethod == "tools/call" ? arguments(of: call) : nil
        let request = AuditedRequest(
            route: route.serial, traceID: traceID, httpMethod: sent.method, protocolVersion: protocolVersion, mcpMethod: mcpMethod, target: call?.target,
            sessionID: call?.sessionID ?? sent.createdSession, caller: caller, clientIP: sent.clientIP
        )
        let whatAndWho: [UInt8]
        // A traced request's id is its own: encoding it is all the memo would save.
        if traceID == nil, memo.auditedRequest?.isSame(as: request) == true {
            whatAndWho = memo.auditedFields
        } else {
            whatAndWho = Self.whatAndWho(request, route: route)
            (memo.auditedRequest, memo.auditedFields) = (request, whatAndWho)
        }
        sink.recordLine { out in
            AuditLine.start(Self.requestEvent, time: Date(), to: &out)
            Self.requestIDField(call?.rawID, to: &out)
            AuditLine.encoded(whatAndWho, to: &out)
            AuditLine.field("status", Int64(sent.status.code), to: &out)
            AuditLine.field("error_code", sent.errorCode.map(Int64.init), to: &out)
            AuditLine.field("duration_ms", sent.elapsedNanoseconds / 1_000_000, to: &out)
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

    static let requestEvent: StaticString = "mcp.request"

    /// What an `mcp.request` line says of the request and its caller, apart from its id, outcome,
    /// sizes and times: the same for most of a connection's requests (one client calling, often,
    /// the same tool in the same session), so the audit line reuses its last encoding when they
    /// are the same (compared as they are, before the session id is hashed).
    struct AuditedRequest {
        /// The route's serial (`InstanceSerial`), not the route: the memo does not keep a replaced
        /// configuration's route alive.
        let route: Int
        let traceID: String?
        let httpMethod: String
        let protocolVersion: String?
        let mcpMethod: String?
        let target: String?
        let sessionID: String?
        let caller: VerifiedCaller?
        let clientIP: String?

        func isSame(as other: AuditedRequest) -> Bool {
            route == other.route && caller === other.caller && traceID == other.traceID && httpMethod == other.httpMethod
                && protocolVersion == other.protocolVersion && mcpMethod == other.mcpMethod && target == other.target && sessionID == other.sessionID
                && clientIP == other.clientIP
        }
    }

    /// `trace_id`, the route's fields, `http_method`, `protocol_version`, `mcp_method`, the call's
    /// target (`tool`, `resource_uri` or `prompt`), `session` (hashed), and `user`, `subject`,
    /// `client_id` and `ip`, encoded (`record` reuses the connection's last encoding when they
    /// are the same).
    private static func whatAndWho(_ request: AuditedRequest, route: CompiledRoute) -> [UInt8] {
        AuditLineWriter.bytes { out in
            AuditLine.field("trace_id", request.traceID, to: &out)
            AuditLine.encoded(route.auditFields, to: &out)
            AuditLine.field("http_method", request.httpMethod, to: &out)
            AuditLine.field("protocol_version", request.protocolVersion, to: &out)
            AuditLine.field("mcp_method", request.mcpMethod, to: &out)
            switch request.mcpMethod {
            case "tools/call": AuditLine.field("tool", request.target, to: &out)
            case "resources/read": AuditLine.field("resource_uri", request.target, to: &out)
            case "prompts/get": AuditLine.field("prompt", request.target, to: &out)
            default: break
            }
            AuditLine.field("session", request.sessionID.map(sessionHash), to: &out)
            if let caller = request.caller {
                AuditLine.field("user", caller.claims.login, to: &out)
                AuditLine.field("subject", caller.claims.sub, to: &out)
                AuditLine.field("client_id", caller.claims.client_id, to: &out)
            }
            AuditLine.field("ip", request.clientIP, to: &out)
        }
    }

    /// The longest JSON-RPC id written as the client sent it: the client chooses it, and a
    /// megabyte of id would otherwise be a megabyte of audit line per request.
    static let maxRequestIDLength = 128

    /// `request_id`: the JSON-RPC id as the client sent it (a number stays a number, a string a
    /// string), to find the request in the client's and the upstream's logs; nothing for a
    /// notification. A longer id is cut to `maxRequestIDLength` characters and kept as a string
    /// ending in `…`.
    static func requestIDField(_ rawID: String?, to out: inout AuditLineWriter) {
        guard let rawID else { return }
        if rawID.utf8.count <= maxRequestIDLength {
            // Raw JSON the strict parse accepted: valid as it is, with no raw control character.
            AuditLine.field("request_id", json: rawID, to: &out)
        } else {
            AuditLine.field("request_id", String(rawID.prefix(maxRequestIDLength)) + "…", to: &out)
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
        // A short chunk that neither mentions "error" nor escapes anything (a key could be
        // written escaped) is no error: a look at each byte costs less than scanning its first
        // members (a long one is not read to its end).
        if last.readableBytes <= Self.shortChunk, !mentionsError(last, orEscapes: true) { return nil }
        // A JSON answer is told from its first members: a result is not read further (and its
        // content type not looked at); only an error is parsed.
        switch leadingMember(last) {
        case .error: return MediaTypes.isJSON(contentType) ? code(of: last) : nil
        case .result: return nil
        case nil: break
        }
        // An event stream: the last `data:` line of the last chunk written (one event per chunk),
        // read only when the chunk mentions "error" at all.
        guard MediaTypes.isEventStream(contentType), mentionsError(last) else { return nil }
        let text = String(buffer: last)
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("data:") }) else { return nil }
        let message = ByteBuffer(string: String(line.dropFirst(5)).trimmingCharacters(in: .whitespaces))
        return leadingMember(message) == .error ? code(of: message) : nil
    }

    /// Up to this many bytes, `mentionsError` first.
    static let shortChunk = 512

    private enum LeadingMember { case error, result }

    /// Which of `error` and `result` the JSON object in `buffer` has first; nil when it is no
    /// object or has neither.
    private static func leadingMember(_ buffer: ByteBuffer) -> LeadingMember? {
        switch buffer.withUnsafeReadableBytes({ JSONScanner.firstMember("error", or: "result", of: $0, in: 0..<$0.count) }) {
        case 0: .error
        case 1: .result
        default: nil
        }
    }

    private static func code(of message: ByteBuffer) -> Int? {
        guard let parsed = try? JSONRPCMessage(parsing: message), parsed.kind == .errorResponse else { return nil }
        return parsed.value(at: ["error", "code"]).flatMap { Int($0) }
    }

    private static let errorKey = Array(#""error""#.utf8)

    /// Whether `buffer` holds `"error"` (or, with `orEscapes`, any backslash).
    static func mentionsError(_ buffer: ByteBuffer, orEscapes: Bool = false) -> Bool {
        buffer.withUnsafeReadableBytes { raw in
            if orEscapes, let base = raw.baseAddress, memchr(base, Int32(UInt8(ascii: "\\")), raw.count) != nil { return true }
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
