import NIOCore

/// Splits a child's output into lines on `\n` only. (Splitting on other Unicode line breaks would
/// cut JSON strings that carry a raw U+2028.) Lines longer than `maxLength` are dropped whole
/// and reported, so one oversized message cannot exhaust memory or desynchronise the framing.
struct LineFramer: ByteToMessageDecoder {
    typealias InboundOut = LineEvent

    enum LineEvent: Equatable {
        case line(ByteBuffer)
        case oversized(bytes: Int)
    }

    let maxLength: Int
    private var discarding = 0
    private var scanned = 0

    init(maxLength: Int) {
        self.maxLength = maxLength
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        // Resume the search where the previous call stopped, so long lines are scanned once.
        let searchStart = view.index(view.startIndex, offsetBy: min(scanned, view.count))
        guard let newline = view[searchStart...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = view.count
            if discarding > 0 || view.count > maxLength {
                discarding += view.count
                buffer.moveReaderIndex(forwardBy: view.count)
                scanned = 0
            }
            return .needMoreData
        }
        let length = newline - view.startIndex
        scanned = 0
        if discarding > 0 || length > maxLength {
            let total = discarding + length
            discarding = 0
            buffer.moveReaderIndex(forwardBy: length + 1)
            context.fireChannelRead(wrapInboundOut(.oversized(bytes: total)))
            return .continue
        }
        var line = buffer.readSlice(length: length) ?? ByteBuffer()
        buffer.moveReaderIndex(forwardBy: 1)
        if line.readableBytes > 0, line.getInteger(at: line.writerIndex - 1, as: UInt8.self) == UInt8(ascii: "\r") {
            line.moveWriterIndex(to: line.writerIndex - 1)
        }
        context.fireChannelRead(wrapInboundOut(.line(line)))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // A final line without newline still counts.
        if buffer.readableBytes > 0, discarding == 0, let line = buffer.readSlice(length: buffer.readableBytes) {
            context.fireChannelRead(wrapInboundOut(.line(line)))
        }
        return .needMoreData
    }
}
