import NIOFoundationEssentialsCompat
import Foundation
package import MCPMessages
package import NIOCore
import Synchronization

/// The rewrites between the eras, on messages alone: what a 2026-07-28 client's request loses on
/// its way to a session-based server (modern `_meta`), what a session-based client's request gains
/// on its way to a 2026-07-28 server (`_meta` stamped from its `initialize`), and how answers are
/// spelled for the other era (`resultType`, cache hints, InputRequiredResult refused or relayed).
package enum EraRewrite {
    /// Rewrites `params._meta` without the modern keys (when it also holds others, e.g. a progress token).
    package static func withoutModernMeta(_ message: JSONRPCMessage) -> JSONRPCMessage? {
        message.editing("params") { params in
            let meta = (params["_meta"] as? [String: Any] ?? [:]).filter { !$0.key.hasPrefix(ModernProtocol.metaPrefix) }
            params["_meta"] = meta.isEmpty ? nil : meta
        }
    }

    package static func discoverResponse(rawID: String?, initializeResult: [String: SendableJSON], modern: Bool) -> ByteBuffer {
        if modern {
            // The child's own DiscoverResult, remembered from the probe.
            let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: initializeResult.mapValues(\.value), options: [.withoutEscapingSlashes])) ?? Data("{}".utf8), as: UTF8.self)
            return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":\(resultJSON)}")
        }
        var result: [String: Any] = [
            "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
            "supportedVersions": ModernProtocol.versions,
            "capabilities": initializeResult["capabilities"]?.value ?? [String: Any](),
        ]
        if let serverInfo = initializeResult["serverInfo"]?.value {
            result["_meta"] = [ModernProtocol.metaPrefix + "serverInfo": serverInfo]
        }
        if let instructions = initializeResult["instructions"]?.value { result["instructions"] = instructions }
        let resultJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: result, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8), as: UTF8.self)
        return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"result\":\(resultJSON)}")
    }

    /// Results whose 2026-07-28 types are cacheable and so carry `ttlMs` and `cacheScope`.
    package static let cacheableMethods: Set<String> = ["tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"]

    /// A result of the session-based child, as 2026-07-28 spells it: `resultType: "complete"`, and
    /// for cacheable results `ttlMs: 0` (a legacy child announces changes by notification, so
    /// nothing is promised fresh) with `cacheScope: "private"` (children are per user).
    package static func completeResult(for method: String) -> @Sendable (ByteBuffer, Bool) -> ByteBuffer {
        let cacheable = cacheableMethods.contains(method)
        return { bytes, isFinal in
            guard isFinal, let message = try? JSONRPCMessage(parsing: bytes), message.kind == .response else { return bytes }
            var members: [String] = []
            if !message.resultHasMember("resultType") { members.append(#""resultType":"complete""#) }
            if cacheable {
                if !message.resultHasMember("ttlMs") { members.append(#""ttlMs":0"#) }
                if !message.resultHasMember("cacheScope") { members.append(#""cacheScope":"private""#) }
            }
            guard !members.isEmpty else { return bytes }
            return message.insertingIntoResult(members.joined(separator: ",")) ?? bytes
        }
    }

    /// An `InputRequiredResult` (2026-07-28) turned into a JSON-RPC error for a session-based
    /// client; anything else unchanged.
    package static func refusingInputRequired(_ bytes: ByteBuffer) -> ByteBuffer {
        guard mayBeInputRequired(bytes), let message = try? JSONRPCMessage(parsing: bytes), message.isResponse,
              message.string(at: ["result", "resultType"]) == "input_required"
        else { return bytes }
        let asks = message.value(at: ["result", "inputRequests"]).flatMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] } ?? [:]
        let methods = asks.keys.sorted().compactMap { message.string(at: ["result", "inputRequests", $0, "method"]) }
        let what = methods.isEmpty ? "more input" : methods.joined(separator: ", ")
        return JSONRPCErrorResponse.make(
            rawID: message.rawID, code: JSONRPCErrorResponse.internalError,
            message: "the MCP server asked for \(what), which this gateway cannot yet relay from a 2026-07-28 server to a session-based client",
            dataJSON: "{\"reason\":\"input_required_not_relayed\"}"
        )
    }

    /// The message with `meta` (a JSON object of `_meta` members) merged into `params._meta`.
    package static func stamping(_ message: JSONRPCMessage, meta: String) -> JSONRPCMessage {
        guard message.isRequest, let stamp = (try? JSONSerialization.jsonObject(with: Data(meta.utf8))) as? [String: Any] else { return message }
        return message.editing("params") { params in
            params["_meta"] = (params["_meta"] as? [String: Any] ?? [:]).merging(stamp) { current, _ in current }
        } ?? message
    }

    package static let askCapabilities = ["elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"]

    package static func declares(stamp: String, anyOf capabilities: [String]) -> Bool {
        guard let meta = (try? JSONSerialization.jsonObject(with: Data(stamp.utf8))) as? [String: Any],
              let declared = meta[ModernProtocol.metaPrefix + "clientCapabilities"] as? [String: Any]
        else { return false }
        return capabilities.contains { declared[$0] != nil }
    }

    /// Whether `bytes` is an `InputRequiredResult`. Called on every answer: a byte search rules
    /// out almost all of them before anything is parsed.
    package static func isInputRequired(_ bytes: ByteBuffer) -> Bool {
        mayBeInputRequired(bytes) && (try? JSONRPCMessage(parsing: bytes))?.string(at: ["result", "resultType"]) == "input_required"
    }

    private static let inputRequiredMarker = Array("input_required".utf8)

    package static func mayBeInputRequired(_ bytes: ByteBuffer) -> Bool {
        bytes.withUnsafeReadableBytes { buffer in
            let marker = inputRequiredMarker
            guard buffer.count >= marker.count else { return false }
            var start = 0
            let last = buffer.count - marker.count
            while start <= last {
                if buffer[start] == marker[0] {
                    var matched = 1
                    while matched < marker.count, buffer[start + matched] == marker[matched] { matched += 1 }
                    if matched == marker.count { return true }
                }
                start += 1
            }
            return false
        }
    }

    package static let discoverProbe = #"{"jsonrpc":"2.0","id":"mcp-gateway-discover","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp-gateway","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#

    /// The `subscriptions/listen` notification fields, the capability that must declare
    /// `listChanged` for each, and the notification it selects.
    package static let listChangedFilters = [
        ("toolsListChanged", "tools", "notifications/tools/list_changed"),
        ("promptsListChanged", "prompts", "notifications/prompts/list_changed"),
        ("resourcesListChanged", "resources", "notifications/resources/list_changed"),
    ]
}

extension JSONRPCMessage {
    /// The message decoded, changed by `edit` at `member` (an object, created when absent), and
    /// encoded again; nil when it is not a JSON object. For the rare rewrites (stamping `_meta`, a
    /// retry's answers): the hot path splices bytes instead.
    package func editing(_ member: String, _ edit: (inout [String: Any]) -> Void) -> JSONRPCMessage? {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] else { return nil }
        var value = object[member] as? [String: Any] ?? [:]
        edit(&value)
        object[member] = value
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes]) else { return nil }
        return try? JSONRPCMessage(parsing: ByteBuffer(bytes: data))
    }
}

/// A JSON value that can cross concurrency domains (decoded by JSONSerialization).
package struct SendableJSON: @unchecked Sendable {
    package let value: Any

    package init(_ value: Any) {
        self.value = value
    }
}
