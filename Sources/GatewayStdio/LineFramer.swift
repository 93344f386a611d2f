import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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
        let readable = buffer.readableBytes
        // Resume the search where the previous call stopped, so long lines are scanned once
        // (`memchr`: a byte loop costs several instructions a byte, and answers are long).
        let from = min(scanned, readable)
        let newline: Int? = buffer.withUnsafeReadableBytes { bytes in
            guard from < bytes.count, let base = bytes.baseAddress, let found = memchr(base + from, 0x0A, bytes.count - from) else { return nil }
            return base.distance(to: UnsafeRawPointer(found))
        }
        guard let length = newline else {
            scanned = readable
            if discarding > 0 || readable > maxLength {
                discarding += readable
                buffer.moveReaderIndex(forwardBy: readable)
                scanned = 0
            }
            return .needMoreData
        }
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
