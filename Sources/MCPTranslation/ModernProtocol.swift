import NIOFoundationEssentialsCompat
import Foundation
package import MCPMessages
package import NIOCore
import Synchronization

/// The 2026-07-28 protocol as the gateway speaks it on both sides: its constants, the header value
/// codec, and the messages the gateway writes itself when translating between eras.
package enum ModernProtocol {
    /// The gateway's own `initialize` to a session-based server it translates for (a pool child, an
    /// HTTP upstream). It offers elicitation and sampling: the server's asks become Multi
    /// Round-Trip Requests to the 2026-07-28 client (refused by the gateway when that client did
    /// not declare the capability).
    package static let initializeRequest = #"{"jsonrpc":"2.0","id":"mcp-gateway-init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{},"sampling":{}},"clientInfo":{"name":"mcp-gateway","version":"0.1.0"}}}"#
    package static let versions = MCPVersions.modern
    package static let metaPrefix = "io.modelcontextprotocol/"
    /// Where a 2026-07-28 request carries its protocol version (read on every request).
    package static let protocolVersionPath = ["params", "_meta", metaPrefix + "protocolVersion"]
    package static let headerMismatch = -32020
    package static let unsupportedVersion = -32022

    /// `=?base64?…?=` header values decode to their UTF-8 text; others are taken as they are.
    package static func decodeHeader(_ value: String) -> String? {
        // The common case: a plain value, nothing to trim or decode.
        if !value.hasPrefix("=?"), value.first != " ", value.last != " " { return value }
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("=?base64?"), trimmed.hasSuffix("?=") else { return trimmed }
        let encoded = String(trimmed.dropFirst("=?base64?".count).dropLast(2))
        guard let data = Data(base64Encoded: encoded) else { return nil }
        return String(data: data, encoding: .utf8)
    }

    /// The header value for `text`: as it is when it is plain visible ASCII, else `=?base64?…?=`.
    package static func encodeHeader(_ text: String) -> String {
        let plain = text.allSatisfy { $0.isASCII && !$0.isNewline } && text.first != " " && text.last != " "
        return plain ? text : "=?base64?\(Data(text.utf8).base64EncodedString())?="
    }

    /// An `InputRequiredResult` carrying one ask under the key `input-1`, answering `rawID`.
    package static func inputRequiredResponse(rawID: String?, askMethod: String, askParams: String, requestState: String) -> ByteBuffer {
        ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":{\"resultType\":\"input_required\",\"inputRequests\":{\"input-1\":{\"method\":\(JSONRPCErrorResponse.jsonString(askMethod)),\"params\":\(askParams)}},\"requestState\":\"\(requestState)\"}}")
    }

    /// The response to a server's ask (id `id`, raw JSON), made from a client's retry: its
    /// `inputResponses["input-1"]`, or an error when the client sent none.
    package static func answerToAsk(id: String, from retry: JSONRPCMessage) -> String {
        guard let value = retry.value(at: ["params", "inputResponses", "input-1"]) else {
            return "{\"jsonrpc\":\"2.0\",\"id\":\(id),\"error\":{\"code\":-32600,\"message\":\"the client sent no response for this request\"}}"
        }
        return "{\"jsonrpc\":\"2.0\",\"id\":\(id),\"result\":\(value)}"
    }

    /// The answer to a session-based client's `initialize`, made from a 2026-07-28 server's
    /// DiscoverResult: its capabilities, serverInfo and instructions, at the client's version when
    /// the gateway supports it.
    package static func initializeAnswer(to initialize: JSONRPCMessage, discover: [String: Any], fallbackName: String) -> ByteBuffer {
        let requested = initialize.string(at: ["params", "protocolVersion"]) ?? "2025-11-25"
        let supported = MCPVersions.sessionBased
        var result: [String: Any] = [
            "protocolVersion": supported.contains(requested) ? requested : supported[supported.count - 1],
            "capabilities": discover["capabilities"] ?? [String: Any](),
            "serverInfo": ((discover["_meta"] as? [String: Any])?[metaPrefix + "serverInfo"]) ?? ["name": fallbackName, "version": "unknown"],
        ]
        if let instructions = discover["instructions"] { result["instructions"] = instructions }
        let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: result, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8), as: UTF8.self)
        return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(initialize.rawID ?? "null"),\"result\":\(resultJSON)}")
    }

    /// The `_meta` members (JSON object text) stamped on a session-based client's requests to a
    /// 2026-07-28 server: the version, and the clientInfo and capabilities from its `initialize`.
    package static func clientStamp(from initialize: JSONRPCMessage) -> String {
        var meta: [String: Any] = [metaPrefix + "protocolVersion": versions[0]]
        meta[metaPrefix + "clientInfo"] = try? JSONSerialization.jsonObject(with: Data((initialize.value(at: ["params", "clientInfo"]) ?? "{}").utf8))
        meta[metaPrefix + "clientCapabilities"] = try? JSONSerialization.jsonObject(with: Data((initialize.value(at: ["params", "capabilities"]) ?? "{}").utf8))
        return String(decoding: (try? JSONSerialization.data(withJSONObject: meta, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// The capability names in a `clientCapabilities` JSON object (raw text), if any.
    package static func declaredCapabilities(_ json: String?) -> Set<String> {
        Set(((try? JSONSerialization.jsonObject(with: Data((json ?? "{}").utf8))) as? [String: Any] ?? [:]).keys)
    }
}
