public import NIOCore

/// What an HTTP response reading one of a session's streams receives.
public enum StreamItem: Sendable, Equatable {
    /// A JSON-RPC message with its SSE event id. `final` marks the response that completes the
    /// POST it belongs to.
    case message(eventID: String, bytes: ByteBuffer, final: Bool)
    /// The stream is complete: close the response.
    case end
}

