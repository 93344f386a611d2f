import Foundation
import GatewayUpstream
import HTTPTypes
import Hummingbird

/// Every failure the gateway answers itself. `response` is the one place that decides status
/// codes and bodies, so each error looks the same wherever it is raised.
enum GatewayError: Error {
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
    case streamConflict
    case notAcceptable(message: String)
    case stdioAtCapacity(service: String, limit: Int)
    case stdioUserLimit(service: String, limit: Int)
    case stdioStartFailed(service: String, detail: String)
    case stdioStartTimeout(service: String, timeout: Duration)
    /// The state store could not answer a check the request depends on (fails closed).
    case storeUnavailable

    var status: HTTPResponse.Status {
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
        case .stdioAtCapacity, .storeUnavailable: .serviceUnavailable
        case .stdioUserLimit: .tooManyRequests
        case .stdioStartFailed: .badGateway
        case .stdioStartTimeout: .gatewayTimeout
        case .upstream(let error):
            switch error.kind {
            case .timeout: .gatewayTimeout
            case .unreachable, .protocolFailure: .badGateway
            }
        }
    }

    /// A short, stable identifier for logs and clients.
    var reason: String {
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
        case .streamConflict: "stream_conflict"
        case .notAcceptable: "not_acceptable"
        case .stdioAtCapacity: "service_at_capacity"
        case .stdioUserLimit: "user_session_limit"
        case .stdioStartFailed: "server_start_failed"
        case .stdioStartTimeout: "server_start_timeout"
        case .storeUnavailable: "store_unavailable"
        case .upstream(let error):
            switch error.kind {
            case .timeout: "upstream_timeout"
            case .unreachable: "upstream_unreachable"
            case .protocolFailure: "upstream_failed"
            }
        }
    }

    var message: String {
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
        case .streamConflict: "this session already has an open GET stream"
        case .notAcceptable(let message): message
        case .stdioAtCapacity(let service, let limit): "service \(service) is at its limit of \(limit) sessions; retry later"
        case .stdioUserLimit(let service, let limit): "you already hold \(limit) sessions of service \(service); end one (DELETE) or let one idle out"
        case .stdioStartFailed(let service, let detail): "service \(service): \(detail)"
        case .stdioStartTimeout(let service, let timeout): "service \(service): the MCP server did not answer initialize within \(timeout)"
        case .storeUnavailable: "the gateway's state store is unavailable; retry shortly"
        }
    }

    /// JSON-RPC error code for the body.
    var jsonRPCCode: Int {
        switch self {
        case .badRequest(let code, _): code
        case .sessionNotFound: -32001
        default: -32000
        }
    }

    var service: String? {
        switch self {
        case .stdioAtCapacity(let service, _), .stdioUserLimit(let service, _), .stdioStartFailed(let service, _), .stdioStartTimeout(let service, _): service
        case .upstream(let error): error.service
        default: nil
        }
    }

    /// Errors at an MCP endpoint are JSON-RPC error objects (MCP clients surface their message);
    /// elsewhere a plain JSON object.
    func response(jsonRPC: Bool, requestID: Any? = nil) -> Response {
        var data: [String: Any] = ["status": Int(status.code), "reason": reason]
        if let service { data["service"] = service }
        let object: [String: Any]
        if jsonRPC {
            object = [
                "jsonrpc": "2.0",
                "id": requestID ?? NSNull(),
                "error": ["code": jsonRPCCode, "message": message, "data": data] as [String: Any],
            ]
        } else {
            var plain = data
            plain["error"] = reason
            plain["message"] = message
            object = plain
        }
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if case .methodNotAllowed = self { headers[.allow] = "GET, POST, DELETE" }
        if case .stdioAtCapacity = self { headers[.retryAfter] = "5" }
        if case .stdioUserLimit = self { headers[.retryAfter] = "30" }
        if case .storeUnavailable = self { headers[.retryAfter] = "2" }
        return JSONResponse.make(status: status, object: object, headers: headers)
    }
}

enum JSONResponse {
    static func make(status: HTTPResponse.Status, object: Any, headers: HTTPFields = [.contentType: "application/json"]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        var headers = headers
        if headers[.contentType] == nil { headers[.contentType] = "application/json" }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
