public import NIOCore

/// One server-sent event: its `data` lines joined with `\n`, as bytes (never decoded to text on
/// the way, so a character split across network chunks arrives whole).
public struct SSEEvent: Sendable, Equatable {
    public var id: String?
    public var event: String?
    public var data: ByteBuffer

    public init(id: String? = nil, event: String? = nil, data: ByteBuffer) {
        self.id = id
        self.event = event
        self.data = data
    }
}

/// A byte-level `text/event-stream` decoder (WHATWG HTML §9.2.6): lines end in CR, LF or CRLF
/// (a CRLF split across chunks included), comments and unknown fields are skipped, one space
/// after the colon is dropped, and an event is dispatched at a blank line when it has data. Every
/// byte is examined once however the stream is chunked, so a large event costs linear time; an
/// event larger than `maxEventBytes` is an error rather than unbounded memory.
public struct SSEDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = SSEEvent

    public struct EventTooLarge: Error, Equatable {
        public let limit: Int
    }

    public let maxEventBytes: Int
    private var data: ByteBuffer?
    private var eventType: String?
    private var lastEventID: String?
    /// Bytes after the reader index already known to hold no line end.
    private var scanned = 0
    /// The previous line ended in CR: an LF right after it belongs to that line end.
    private var skipLineFeed = false

    public init(maxEventBytes: Int = 16 * 1024 * 1024) {
        self.maxEventBytes = maxEventBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> SSEEvent? {
        while true {
            if skipLineFeed, buffer.readableBytes > 0 {
                skipLineFeed = false
                if buffer.readableBytesView.first == UInt8(ascii: "\n") { buffer.moveReaderIndex(forwardBy: 1) }
            }
            let view = buffer.readableBytesView
            guard let end = view.dropFirst(scanned).firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) else {
                scanned = view.count
                if view.count + (data?.readableBytes ?? 0) > maxEventBytes { throw EventTooLarge(limit: maxEventBytes) }
                return nil
            }
            let lineLength = end - view.startIndex
            let terminator = view[end]
            guard let line = buffer.readSlice(length: lineLength) else { return nil }
            buffer.moveReaderIndex(forwardBy: 1)
            scanned = 0
            if terminator == UInt8(ascii: "\r") { skipLineFeed = true }
            if let event = try process(line) { return event }
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> SSEEvent? {
        // An event not ended by a blank line when the stream ends is discarded (as browsers do).
        try decode(buffer: &buffer)
    }

    private mutating func process(_ line: ByteBuffer) throws -> SSEEvent? {
        guard line.readableBytes > 0 else {
            defer {
                data = nil
                eventType = nil
            }
            guard var payload = data else { return nil }
            // Lines were joined with a trailing LF each; the last one is not part of the data.
            payload.moveWriterIndex(to: payload.writerIndex - 1)
            return SSEEvent(id: lastEventID, event: eventType, data: payload)
        }
        let bytes = line.readableBytesView
        if bytes.first == UInt8(ascii: ":") { return nil }
        let colon = bytes.firstIndex(of: UInt8(ascii: ":"))
        let field = String(decoding: bytes[bytes.startIndex..<(colon ?? bytes.endIndex)], as: UTF8.self)
        var valueStart = colon.map { $0 + 1 } ?? bytes.endIndex
        if valueStart < bytes.endIndex, bytes[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
        let value = bytes[valueStart..<bytes.endIndex]
        switch field {
        case "data":
            var accumulated = data ?? ByteBuffer()
            guard accumulated.readableBytes + value.count + 1 <= maxEventBytes else { throw EventTooLarge(limit: maxEventBytes) }
            accumulated.writeBytes(value)
            accumulated.writeInteger(UInt8(ascii: "\n"))
            data = accumulated
        case "event":
            eventType = String(decoding: value, as: UTF8.self)
        case "id":
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        default:
            break
        }
        return nil
    }
}
