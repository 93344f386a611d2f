public import NIOCore

/// What an HTTP response reading one of a session's streams receives.
public enum StreamItem: Sendable, Equatable {
    /// A JSON-RPC message with its SSE event id. `final` marks the response that completes the
    /// POST it belongs to.
    case message(eventID: String, bytes: ByteBuffer, final: Bool)
    /// The stream is complete: close the response.
    case end
}

/// Encodes messages as Server-Sent Events.
public enum SSEEncoding {
    public static func event(id: String?, data: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: data.readableBytes + 48)
        if let id {
            buffer.writeStaticString("id: ")
            buffer.writeString(id)
            buffer.writeStaticString("\n")
        }
        buffer.writeStaticString("event: message\ndata: ")
        buffer.writeImmutableBuffer(data)
        buffer.writeStaticString("\n\n")
        return buffer
    }
}
