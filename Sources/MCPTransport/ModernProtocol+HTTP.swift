import NIOFoundationEssentialsCompat
import Foundation
package import HTTPTypes
package import Hummingbird
package import MCPMessages
package import MCPTranslation
import NIOCore

/// The 2026-07-28 protocol over HTTP: the `Mcp-*` headers and the request rules.
extension ModernProtocol {
    package static let methodHeader = HTTPField.Name("Mcp-Method")!
    package static let nameHeader = HTTPField.Name("Mcp-Name")!

    /// A JSON-RPC error answering a 2026-07-28 request (200 for errors the protocol reports as
    /// a result of the call, such as an unknown `requestState`), in the gateway's one error form.
    package static func error(_ status: HTTPResponse.Status, code: Int, message: String, rawID: String?, dataJSON: String? = nil) -> Response {
        GatewayError.protocolViolation(ProtocolViolation(status: status, code: code, message: message, rawID: rawID, dataJSON: dataJSON))
            .response(form: .jsonRPC(rawID: rawID))
    }
}

extension ModernProtocol {
    /// The 2026-07-28 request rules, as one step: POST only, one JSON-RPC request or notification,
    /// a version the gateway speaks, and headers that mirror the body.
    package static func validate(_ call: MCPCall, request: Request) throws(GatewayError) -> JSONRPCMessage {
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
            let supported = (versions + MCPVersions.sessionBased.reversed()).map { "\"\($0)\"" }.joined(separator: ",")
            throw violation(.badRequest, unsupportedVersion, "Unsupported protocol version \(headerVersion)", rawID: rawID, dataJSON: "{\"supported\":[\(supported)]}")
        }
        var mismatch: String?
        let bodyVersion = message.string(at: ModernProtocol.protocolVersionPath)
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

}

