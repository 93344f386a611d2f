import AuthorizationEndpoints
package import GatewayAuth
import Foundation
package import HTTPTypes
package import NIOCore
package import Hummingbird
import MCPMessages

/// Every failure the gateway answers itself. `response(form:)` is the one place that decides
/// status codes and bodies, so each error looks the same wherever it is raised; the form (plain
/// JSON, a JSON-RPC error object, an OAuth error) follows from where it happened
/// (`response(routeMatched:)`).
package enum GatewayError: Error {
    case noRoute(host: String, path: String)
    /// A path that cannot be read one way only (encoded slash, `..` above the root, raw and
    /// normalized forms reaching different routers).
    case ambiguousPath(detail: String)
    /// The Host names no host this gateway serves (DNS rebinding, misdirected requests).
    case hostNotAllowed(host: String)
    case notMCPEndpoint(router: String, mcpPath: String)
    case methodNotAllowed(method: String)
    case originForbidden(origin: String)
    case requestTooLarge(limit: Int)
    case upstream(UpstreamError)
    case clientBodyFailed(detail: String)
    case badRequest(code: Int, message: String)
    case sessionNotFound
    /// The session is held by another live instance (`ClusterMembership`): the pipeline forwards
    /// the request to `url`; only when that is not possible does a client see this (503).
    case heldElsewhere(instance: String, url: String)
    /// A request another instance forwarded here for a session this stopping instance is handing
    /// on: the forwarding instance takes the session over itself (`ClusterHops`).
    case instanceDraining
    /// The session is held by another live instance that cannot be reached (no `cluster:`).
    case clusterUnreachable(instance: String)
    case streamConflict
    case notAcceptable(message: String)
    case stdioAtCapacity(service: String, limit: Int)
    /// The gateway holds as many of a kind of connection (legacy SSE sessions) as it takes.
    case atCapacity(what: String, limit: Int)
    case stdioUserLimit(service: String, limit: Int)
    /// The service's children are ending (a reload replaced it, or the gateway is stopping).
    case stdioShuttingDown(service: String)
    case stdioStartFailed(service: String, detail: String)
    case stdioStartTimeout(service: String, timeout: Duration)
    /// The state store could not answer a check the request depends on (fails closed).
    case storeUnavailable
    /// An OAuth error (RFC 6749 §5.2, RFC 6750 §3): a refused or missing access token with its
    /// challenge, or a forward-auth denial.
    case oauth(OAuthRefusal)
    /// A request that breaks a protocol rule of its era, answered as a JSON-RPC error for its id.
    case protocolViolation(ProtocolViolation)
    /// A stage ran before the stage whose result it needs: a programming error, never a client's.
    case pipelineOrder(stage: String)
    /// A router's `rateLimit` middleware refused the request (429 with `Retry-After`).
    case rateLimited(RateLimitRefusal)

    package static func oauth(status: HTTPResponse.Status, code: String, description: String) -> GatewayError {
        .oauth(OAuthRefusal(status: status, code: code, description: description))
    }

    package var status: HTTPResponse.Status {
        switch self {
        case .noRoute, .notMCPEndpoint: .notFound
        case .ambiguousPath: .badRequest
        case .hostNotAllowed: .misdirectedRequest
        case .methodNotAllowed: .methodNotAllowed
        case .originForbidden: .forbidden
        case .requestTooLarge: .contentTooLarge
        case .clientBodyFailed, .badRequest: .badRequest
        case .sessionNotFound: .notFound
        case .streamConflict: .conflict
        case .notAcceptable: .notAcceptable
        case .stdioAtCapacity, .storeUnavailable, .atCapacity, .heldElsewhere, .clusterUnreachable, .stdioShuttingDown, .instanceDraining: .serviceUnavailable
        case .stdioUserLimit: .tooManyRequests
        case .stdioStartFailed: .badGateway
        case .stdioStartTimeout: .gatewayTimeout
        case .upstream(let error):
            switch error.kind {
            case .timeout: .gatewayTimeout
            case .unreachable, .protocolFailure: .badGateway
            // Answered as a JSON-RPC error by the era dispatch; a 401 would mean the gateway's token.
            case .authorizationRequired: .forbidden
            }
        case .oauth(let refusal): refusal.status
        case .protocolViolation(let violation): violation.status
        case .pipelineOrder: .internalServerError
        case .rateLimited: .tooManyRequests
        }
    }

    /// A short, stable identifier for logs and clients.
    package var reason: String {
        switch self {
        case .noRoute: "no_route"
        case .ambiguousPath: "ambiguous_path"
        case .hostNotAllowed: "host_not_allowed"
        case .notMCPEndpoint: "not_mcp_endpoint"
        case .methodNotAllowed: "method_not_allowed"
        case .originForbidden: "origin_forbidden"
        case .requestTooLarge: "request_too_large"
        case .clientBodyFailed: "client_body_failed"
        case .badRequest: "bad_request"
        case .sessionNotFound: "session_not_found"
        case .heldElsewhere, .clusterUnreachable: "session_on_other_instance"
        case .instanceDraining: "instance_draining"
        case .streamConflict: "stream_conflict"
        case .notAcceptable: "not_acceptable"
        case .stdioAtCapacity: "service_at_capacity"
        case .stdioShuttingDown: "service_stopping"
        case .atCapacity: "gateway_at_capacity"
        case .stdioUserLimit: "user_session_limit"
        case .stdioStartFailed: "server_start_failed"
        case .stdioStartTimeout: "server_start_timeout"
        case .storeUnavailable: "store_unavailable"
        case .oauth(let refusal): refusal.code
        case .protocolViolation: "protocol_violation"
        case .pipelineOrder: "internal_error"
        case .rateLimited: "rate_limited"
        case .upstream(let error):
            switch error.kind {
            case .timeout: "upstream_timeout"
            case .unreachable: "upstream_unreachable"
            case .protocolFailure: "upstream_failed"
            case .authorizationRequired: "upstream_connection_required"
            }
        }
    }

    package var message: String {
        switch self {
        case .noRoute(let host, let path): "no router matches host \"\(host)\" and path \"\(path)\""
        case .ambiguousPath(let detail): "the request path is refused: \(detail)"
        case .hostNotAllowed(let host): "host \"\(host)\" is not served here; add it to entryPoints.<name>.allowedHosts if it should be"
        case .notMCPEndpoint(let router, let mcpPath): "router \"\(router)\" serves MCP at \(mcpPath) only"
        case .methodNotAllowed(let method): "method \(method) is not allowed on an MCP endpoint; use POST, GET or DELETE"
        case .originForbidden(let origin): "origin \(origin) is not allowed to use this gateway"
        case .requestTooLarge(let limit): "request body exceeds the limit of \(limit) bytes"
        case .upstream(let error): error.description
        case .clientBodyFailed(let detail): "reading the request body failed: \(detail)"
        case .badRequest(_, let message): message
        case .sessionNotFound: "Session not found: the Mcp-Session-Id is unknown or the session has ended; initialize a new session"
        case .instanceDraining: "this gateway instance is stopping and hands the session on; retry"
        case .heldElsewhere(let instance, _): "the session is held by gateway instance \(instance), which could not be reached; retry shortly"
        case .clusterUnreachable(let instance): "the session is held by gateway instance \(instance), which this one cannot reach: configure cluster.advertiseURL and cluster.secret on every instance"
        case .streamConflict: "this session already has an open GET stream"
        case .notAcceptable(let message): message
        case .stdioAtCapacity(let service, let limit): "service \(service) is at its limit of \(limit) sessions; retry later"
        case .atCapacity(let what, let limit): "the gateway holds its limit of \(limit) \(what); retry later"
        case .stdioShuttingDown(let service): "service \(service) is stopping on this gateway instance; retry"
        case .stdioUserLimit(let service, let limit): "you already hold \(limit) sessions of service \(service); end one (DELETE) or let one idle out"
        case .stdioStartFailed(let service, let detail): "service \(service): \(detail)"
        case .stdioStartTimeout(let service, let timeout): "service \(service): the MCP server did not answer initialize within \(timeout)"
        case .storeUnavailable: "the gateway's state store is unavailable; retry shortly"
        case .oauth(let refusal): refusal.description
        case .protocolViolation(let violation): violation.message
        case .pipelineOrder(let stage): "internal error: \(stage) ran before the stage it depends on"
        case .rateLimited(let refusal): "rate limit \(refusal.policy) exceeded; retry in \(refusal.retryAfterSeconds) s"
        }
    }

    /// JSON-RPC error code for the body.
    package var jsonRPCCode: Int {
        switch self {
        case .badRequest(let code, _): code
        case .sessionNotFound: -32001
        case .protocolViolation(let violation): violation.code
        default: -32000
        }
    }

    package var service: String? {
        switch self {
        case .stdioAtCapacity(let service, _), .stdioUserLimit(let service, _), .stdioStartFailed(let service, _), .stdioStartTimeout(let service, _), .stdioShuttingDown(let service): service
        case .upstream(let error): error.service
        default: nil
        }
    }

    /// Says to the instance that forwarded a request that this one is stopping (`instanceDraining`).
    package static let hopStateHeader = HTTPField.Name("mcp-gateway-hop-state")!

    /// The forms a failure is answered in.
    package enum ResponseForm {
        /// Outside MCP endpoints: `{"error": reason, "message": …, "status": …}`.
        case plain
        /// At an MCP endpoint: a JSON-RPC error object (MCP clients surface its message), for the
        /// request's id when the gateway read it.
        case jsonRPC(rawID: String?)
        /// RFC 6749 §5.2: `{"error": code, "error_description": …}`.
        case oauth
    }

    /// The form for an error raised where a router did or did not match yet: OAuth errors and
    /// protocol violations have their own; other errors are JSON-RPC once a router matched (an MCP
    /// client is talking) and plain before.
    package func response(routeMatched: Bool) -> Response {
        switch self {
        case .oauth: response(form: .oauth)
        case .protocolViolation(let violation): response(form: .jsonRPC(rawID: violation.rawID))
        default: response(form: routeMatched ? .jsonRPC(rawID: nil) : .plain)
        }
    }

    /// The one mapping from a failure to its response.
    package func response(form: ResponseForm) -> Response {
        let headers = responseHeaders
        switch form {
        case .oauth:
            if case .oauth(let refusal) = self { return refusal.response }
            return OAuthRefusal(status: status, code: reason, description: message, retryAfter: headers[.retryAfter]).response
        case .jsonRPC(let rawID):
            let answer = jsonRPCAnswer(rawID: rawID)
            return Response(status: answer.status, headers: answer.headers, body: ResponseBody(byteBuffer: answer.body))
        case .plain:
            var object: [String: Any] = ["status": Int(status.code), "reason": reason, "error": reason, "message": message]
            if let service { object["service"] = service }
            return JSONResponse.make(status: status, object: object, headers: headers)
        }
    }

    /// The JSON-RPC form as its parts, for a connection handler that writes them itself (the
    /// fast relay).
    package func jsonRPCAnswer(rawID: String?) -> (status: HTTPResponse.Status, headers: HTTPFields, body: ByteBuffer) {
        var dataJSON: String?
        if case .protocolViolation(let violation) = self {
            dataJSON = violation.dataJSON
        } else {
            var data: [String: Any] = ["status": Int(status.code), "reason": reason]
            if let service { data["service"] = service }
            dataJSON = (try? JSONSerialization.data(withJSONObject: data, options: [.sortedKeys, .withoutEscapingSlashes])).flatMap { String(data: $0, encoding: .utf8) }
        }
        let body = JSONRPCErrorResponse.make(rawID: rawID, code: jsonRPCCode, message: message, dataJSON: dataJSON)
        return (status, responseHeaders, body)
    }

    private var responseHeaders: HTTPFields {
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        switch self {
        case .methodNotAllowed: headers[.allow] = "GET, POST, DELETE"
        case .stdioAtCapacity, .atCapacity: headers[.retryAfter] = "5"
        case .stdioShuttingDown: headers[.retryAfter] = "1"
        case .stdioUserLimit: headers[.retryAfter] = "30"
        case .storeUnavailable, .heldElsewhere, .clusterUnreachable: headers[.retryAfter] = "2"
        case .instanceDraining:
            headers[.retryAfter] = "1"
            headers[Self.hopStateHeader] = "draining"
        case .rateLimited(let refusal):
            headers[.retryAfter] = String(refusal.retryAfterSeconds)
            headers[RateLimitRefusal.policyHeader] = refusal.policyField
            headers[RateLimitRefusal.stateHeader] = refusal.stateField
        case .oauth(let refusal):
            if let challenge = refusal.challenge { headers[.wwwAuthenticate] = challenge }
            if let retryAfter = refusal.retryAfter { headers[.retryAfter] = retryAfter }
        case .protocolViolation(let violation):
            if let allow = violation.allow { headers[.allow] = allow }
        default: break
        }
        return headers
    }
}

extension GatewayError: HTTPResponseError {
    package func response(from request: Request, context: some RequestContext) throws -> Response {
        if let context = context as? any RouteAwareContext { return response(routeMatched: context.routeMatched) }
        return response(form: .plain)
    }
}

/// What a rate limit that refused a request tells the client: `Retry-After` (whole seconds, at
/// least 1) and the IETF httpapi draft's `RateLimit-Policy` and `RateLimit` fields.
package struct RateLimitRefusal: Sendable {
    package static let policyHeader = HTTPField.Name("RateLimit-Policy")!
    package static let stateHeader = HTTPField.Name("RateLimit")!

    /// The policy's name: the middleware's, with the tool pattern for a per-tool limit.
    package var policy: String
    /// Requests per window, and the window.
    package var quota: Int
    package var window: Duration
    package var retryAfter: Duration

    package init(policy: String, quota: Int, window: Duration, retryAfter: Duration) {
        self.policy = policy
        self.quota = quota
        self.window = window
        self.retryAfter = retryAfter
    }

    package var retryAfterSeconds: Int64 { max(1, Self.ceilingSeconds(retryAfter)) }
    /// `"<name>";q=<quota>;w=<window seconds>`
    package var policyField: String { "\(Self.quoted(policy));q=\(quota);w=\(max(1, Self.ceilingSeconds(window)))" }
    /// `"<name>";r=0;t=<seconds until a request fits>`
    package var stateField: String { "\(Self.quoted(policy));r=0;t=\(retryAfterSeconds)" }

    private static func ceilingSeconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds + (attoseconds > 0 ? 1 : 0)
    }

    /// An sf-string: names come from gateway.yaml, but quotes and backslashes are escaped anyway.
    private static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}

/// A request context that knows whether a router matched (which picks the error form).
package protocol RouteAwareContext: RequestContext {
    var routeMatched: Bool { get }
}

/// A request breaking a rule of its protocol era (version, header/body agreement, method), as
/// the JSON-RPC error the era prescribes.
package struct ProtocolViolation: Sendable {
    package init(status: HTTPResponse.Status, code: Int, message: String, rawID: String? = nil, dataJSON: String? = nil, allow: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.rawID = rawID
        self.dataJSON = dataJSON
        self.allow = allow
    }

    package var status: HTTPResponse.Status
    package var code: Int
    package var message: String
    /// The refused request's id (raw JSON), when it could be read.
    package var rawID: String?
    /// The error's `data` member (raw JSON).
    package var dataJSON: String?
    /// `Allow` for a refused method.
    package var allow: String?
}


extension GatewayError {
    /// A session id refused by `SessionBindings`: not found (404) or the store unavailable (503).
    package init(_ refusal: SessionRefusal) {
        switch refusal {
        case .notFound: self = .sessionNotFound
        case .storeUnavailable: self = .storeUnavailable
        }
    }
}
