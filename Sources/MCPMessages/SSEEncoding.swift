public import NIOCore

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
