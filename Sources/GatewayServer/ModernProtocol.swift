import NIOFoundationEssentialsCompat
import Foundation
import HTTPTypes
import Hummingbird
import MCPMessages
import NIOCore

/// The 2026-07-28 protocol as the gateway speaks it on both sides: request validation, and the
/// messages it writes itself when translating between eras.
enum ModernProtocol {
    static let versions = MCPVersions.modern
    static let metaPrefix = "io.modelcontextprotocol/"
    static let headerMismatch = -32020
    static let unsupportedVersion = -32022
    static let methodHeader = HTTPField.Name("Mcp-Method")!
    static let nameHeader = HTTPField.Name("Mcp-Name")!

    /// `=?base64?…?=` header values decode to their UTF-8 text; others are taken as they are.
    static func decodeHeader(_ value: String) -> String? {
        // The common case: a plain value, nothing to trim or decode.
        if !value.hasPrefix("=?"), value.first != " ", value.last != " " { return value }
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("=?base64?"), trimmed.hasSuffix("?=") else { return trimmed }
        let encoded = String(trimmed.dropFirst("=?base64?".count).dropLast(2))
        guard let data = Data(base64Encoded: encoded) else { return nil }
        return String(data: data, encoding: .utf8)
    }

    /// The header value for `text`: as it is when it is plain visible ASCII, else `=?base64?…?=`.
    static func encodeHeader(_ text: String) -> String {
        let plain = text.allSatisfy { $0.isASCII && !$0.isNewline } && text.first != " " && text.last != " "
        return plain ? text : "=?base64?\(Data(text.utf8).base64EncodedString())?="
    }

    static func error(_ status: HTTPResponse.Status, code: Int, message: String, rawID: String?, dataJSON: String? = nil) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: JSONRPCErrorResponse.make(rawID: rawID, code: code, message: message, dataJSON: dataJSON))
        )
    }
}

extension ModernProtocol {
    /// The 2026-07-28 request rules, as one step: POST only, one JSON-RPC request or notification,
    /// a version the gateway speaks, and headers that mirror the body.
    static func validate(_ call: MCPCall, request: Request) throws(GatewayError) -> JSONRPCMessage {
        func violation(_ status: HTTPResponse.Status, _ code: Int, _ message: String, rawID: String? = nil, dataJSON: String? = nil) -> GatewayError {
            .protocolViolation(ProtocolViolation(status: status, code: code, message: message, rawID: rawID, dataJSON: dataJSON))
        }
        guard request.method == .post, let parsed = call.parsed else {
            // 2026-07-28 has no streams or sessions to open or end.
            throw .protocolViolation(ProtocolViolation(
                status: .methodNotAllowed, code: JSONRPCErrorResponse.invalidRequest,
                message: "\(request.method.rawValue) is not part of protocol version 2026-07-28: send each request as a POST", allow: "POST"
            ))
        }
        let message: JSONRPCMessage
        switch parsed {
        case .failure(.invalidJSON):
            throw violation(.badRequest, JSONRPCErrorResponse.parseError, "Parse error: the body must be one JSON-RPC message")
        case .failure, .success(.batch):
            throw violation(.badRequest, JSONRPCErrorResponse.invalidRequest, "Invalid Request: the body must be a JSON-RPC request or notification")
        case .success(.single(let single)):
            message = single
        }
        let rawID = message.rawID
        guard let method = message.method, message.kind == .request || message.kind == .notification else {
            throw violation(.badRequest, JSONRPCErrorResponse.invalidRequest, "Invalid Request: the body must be a JSON-RPC request or notification", rawID: rawID)
        }
        let headerVersion = call.protocolVersion ?? ""
        guard versions.contains(headerVersion) else {
            let supported = (versions + StdioBridge.supportedVersions.reversed()).map { "\"\($0)\"" }.joined(separator: ",")
            throw violation(.badRequest, unsupportedVersion, "Unsupported protocol version \(headerVersion)", rawID: rawID, dataJSON: "{\"supported\":[\(supported)]}")
        }
        var mismatch: String?
        let bodyVersion = message.string(at: ["params", "_meta", metaPrefix + "protocolVersion"])
        if let bodyVersion, bodyVersion != headerVersion {
            mismatch = "MCP-Protocol-Version \(headerVersion) differs from _meta protocolVersion \(bodyVersion)"
        } else if bodyVersion == nil, message.isRequest {
            mismatch = "_meta[\"io.modelcontextprotocol/protocolVersion\"] is required"
        } else if request.headers[methodHeader].flatMap(decodeHeader) != method {
            mismatch = "Mcp-Method must equal the body's method \(method)"
        } else if ["tools/call", "prompts/get", "resources/read"].contains(method) {
            let expected = message.string(at: ["params", method == "resources/read" ? "uri" : "name"])
            if request.headers[nameHeader].flatMap(decodeHeader) != expected {
                mismatch = "Mcp-Name must equal the body's \(method == "resources/read" ? "params.uri" : "params.name")"
            }
        }
        if let mismatch {
            throw violation(.badRequest, headerMismatch, "Header mismatch: \(mismatch)", rawID: rawID)
        }
        return message
    }
}

extension ModernProtocol {
    /// An `InputRequiredResult` carrying one ask under the key `input-1`, answering `rawID`.
    static func inputRequiredResponse(rawID: String?, askMethod: String, askParams: String, requestState: String) -> ByteBuffer {
        ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":{\"resultType\":\"input_required\",\"inputRequests\":{\"input-1\":{\"method\":\(JSONRPCErrorResponse.jsonString(askMethod)),\"params\":\(askParams)}},\"requestState\":\"\(requestState)\"}}")
    }

    /// The response to a server's ask (id `id`, raw JSON), made from a client's retry: its
    /// `inputResponses["input-1"]`, or an error when the client sent none.
    static func answerToAsk(id: String, from retry: JSONRPCMessage) -> String {
        guard let value = retry.value(at: ["params", "inputResponses", "input-1"]) else {
            return "{\"jsonrpc\":\"2.0\",\"id\":\(id),\"error\":{\"code\":-32600,\"message\":\"the client sent no response for this request\"}}"
        }
        return "{\"jsonrpc\":\"2.0\",\"id\":\(id),\"result\":\(value)}"
    }

    /// The answer to a session-based client's `initialize`, made from a 2026-07-28 server's
    /// DiscoverResult: its capabilities, serverInfo and instructions, at the client's version when
    /// the gateway supports it.
    static func initializeAnswer(to initialize: JSONRPCMessage, discover: [String: Any], fallbackName: String) -> ByteBuffer {
        let requested = initialize.string(at: ["params", "protocolVersion"]) ?? "2025-11-25"
        let supported = StdioBridge.supportedVersions
        var result: [String: Any] = [
            "protocolVersion": supported.contains(requested) ? requested : supported[supported.count - 1],
            "capabilities": discover["capabilities"] ?? [String: Any](),
            "serverInfo": ((discover["_meta"] as? [String: Any])?[metaPrefix + "serverInfo"]) ?? ["name": fallbackName, "version": "unknown"],
        ]
        if let instructions = discover["instructions"] { result["instructions"] = instructions }
        let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: result)) ?? Data("{}".utf8), as: UTF8.self)
        return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(initialize.rawID ?? "null"),\"result\":\(resultJSON)}")
    }

    /// The `_meta` members (JSON object text) stamped on a session-based client's requests to a
    /// 2026-07-28 server: the version, and the clientInfo and capabilities from its `initialize`.
    static func clientStamp(from initialize: JSONRPCMessage) -> String {
        var meta: [String: Any] = [metaPrefix + "protocolVersion": versions[0]]
        meta[metaPrefix + "clientInfo"] = try? JSONSerialization.jsonObject(with: Data((initialize.value(at: ["params", "clientInfo"]) ?? "{}").utf8))
        meta[metaPrefix + "clientCapabilities"] = try? JSONSerialization.jsonObject(with: Data((initialize.value(at: ["params", "capabilities"]) ?? "{}").utf8))
        return String(decoding: (try? JSONSerialization.data(withJSONObject: meta)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// The capability names in a `clientCapabilities` JSON object (raw text), if any.
    static func declaredCapabilities(_ json: String?) -> Set<String> {
        Set(((try? JSONSerialization.jsonObject(with: Data((json ?? "{}").utf8))) as? [String: Any] ?? [:]).keys)
    }
}

extension JSONRPCMessage {
    /// The message decoded, changed by `edit` at `member` (an object, created when absent), and
    /// encoded again; nil when it is not a JSON object. For the rare rewrites (stamping `_meta`, a
    /// retry's answers): the hot path splices bytes instead.
    func editing(_ member: String, _ edit: (inout [String: Any]) -> Void) -> JSONRPCMessage? {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] else { return nil }
        var value = object[member] as? [String: Any] ?? [:]
        edit(&value)
        object[member] = value
        guard let data = try? JSONSerialization.data(withJSONObject: object) else { return nil }
        return try? JSONRPCMessage(parsing: ByteBuffer(bytes: data))
    }
}
