public import NIOCore
import Synchronization

/// The protocol revisions the gateway speaks, by era.
public enum MCPVersions {
    /// Session-based revisions: `initialize`, `Mcp-Session-Id`, GET streams.
    public static let sessionBased = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
    /// Stateless revisions: every request stands alone and carries its version and capabilities.
    public static let modern = ["2026-07-28"]
}

/// One client request to an MCP endpoint as the gateway's stages see it: its body read once (and
/// checked to be strict JSON by whoever read it) and parsed once, so that every later stage (rate
/// limits, policies, audit, metrics, the era dispatch, the transports) looks at the same values.
/// A class: the request context carries it through every stage, as one reference.
public final class MCPCall: Sendable {
    public enum Era: Sendable, Equatable {
        /// 2024-11-05 … 2025-11-25 (and requests that name no version).
        case sessionBased
        /// 2026-07-28: any version the session-based era does not know.
        case modern
    }

    public let era: Era
    /// The `MCP-Protocol-Version` header, when sent.
    public let protocolVersion: String?
    /// The `Mcp-Session-Id` header, when sent.
    public let sessionID: String?
    /// The POST body; nil for GET and DELETE.
    public let body: ByteBuffer?
    /// The body as JSON-RPC, or why it is not JSON-RPC (each era answers that in its own words).
    public let parsed: Result<JSONRPCPayload, JSONRPCMessage.ParseError>?
    /// The JSON-RPC method of a single request or notification.
    public let method: String?
    /// The raw JSON of a single message's id.
    public let rawID: String?
    /// The one message of a body that is not a batch. Kept apart: reading it out of `parsed`
    /// copies the whole payload (a retain of each of its parts) on every stage that asks.
    public let message: JSONRPCMessage?
    /// `target`, once found (several stages ask: a per-tool limit, policies, metrics, the audit).
    private let foundTarget = Mutex<String??>(nil)

    public convenience init(protocolVersion: String?, sessionID: String?, body: ByteBuffer?) {
        var parsed: Result<JSONRPCPayload, JSONRPCMessage.ParseError>?
        if let body {
            do throws(JSONRPCMessage.ParseError) {
                parsed = .success(try JSONRPCPayload(parsing: body))
            } catch {
                parsed = .failure(error)
            }
        }
        self.init(protocolVersion: protocolVersion, sessionID: sessionID, body: body, parsed: parsed)
    }

    /// The call of a body that passes `StrictJSON`'s reading, parsed from what that reading found
    /// (one pass over the body where checking and parsing took two); nil when the body fails the
    /// strict reading (the caller's full path answers why). The same call as
    /// `init(protocolVersion:sessionID:body:)` after `StrictJSON.validate`.
    public static func strictlyRead(protocolVersion: String?, sessionID: String?, body: ByteBuffer) -> MCPCall? {
        let read: Result<[JSONScanner.Member]?, StrictJSON.Violation> = body.withUnsafeReadableBytes { bytes in
            do throws(StrictJSON.Violation) { return .success(try StrictJSON.validateTopLevelMembers(bytes)) } catch { return .failure(error) }
        }
        guard case .success(let members) = read else { return nil }
        let parsed: Result<JSONRPCPayload, JSONRPCMessage.ParseError>
        do throws(JSONRPCMessage.ParseError) {
            // An object is a single message; anything else is read as before (a batch, or refused).
            if let members {
                parsed = .success(.single(try JSONRPCMessage(parsing: body, members: members)))
            } else {
                parsed = .success(try JSONRPCPayload(parsing: body))
            }
        } catch {
            parsed = .failure(error)
        }
        return MCPCall(protocolVersion: protocolVersion, sessionID: sessionID, body: body, parsed: parsed)
    }

    private init(protocolVersion: String?, sessionID: String?, body: ByteBuffer?, parsed: Result<JSONRPCPayload, JSONRPCMessage.ParseError>?) {
        self.protocolVersion = protocolVersion
        self.era = protocolVersion.map { MCPVersions.sessionBased.contains($0) ? .sessionBased : .modern } ?? .sessionBased
        self.sessionID = sessionID
        self.body = body
        self.parsed = parsed
        // Kept apart: every stage asks for them, and reading them out of `parsed` copies the
        // whole message each time.
        if case .success(.single(let message)) = parsed {
            self.method = message.method
            self.rawID = message.rawID
            self.message = message
        } else {
            self.method = nil
            self.rawID = nil
            self.message = nil
        }
    }

    public var payload: JSONRPCPayload? {
        if case .success(let payload) = parsed { payload } else { nil }
    }

    /// What the call is about: the tool or prompt name of `tools/call` and `prompts/get`, the
    /// resource URI of `resources/read`, `resources/subscribe` and `resources/unsubscribe`.
    public var target: String? {
        if let found = foundTarget.withLock({ $0 }) { return found }
        let found = findTarget()
        foundTarget.withLock { $0 = .some(found) }
        return found
    }

    private func findTarget() -> String? {
        // `message?.`: read where it is (binding it copies the message).
        switch method {
        case "tools/call", "prompts/get": return message?.paramString("name")
        case "resources/read", "resources/subscribe", "resources/unsubscribe": return message?.paramString("uri")
        default: return nil
        }
    }
}
