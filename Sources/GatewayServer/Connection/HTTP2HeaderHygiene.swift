import HTTPTypes
import NIOCore
import NIOHTTPTypesHTTP2
import NIOHTTPTypes

/// Removes the connection-specific header fields HTTP/2 forbids (RFC 9113 §8.2.2) from response
/// heads written on an HTTP/2 stream. The gateway's SSE responses say `Connection: close` so that
/// an HTTP/1.1 connection that carried a stream is not reused; on an h2 stream that field is a
/// protocol error that would reset the whole connection. On an HTTP/1.1 connection it does nothing.
final class HTTP2HeaderHygiene: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var isHTTP2Stream = false

    static let forbidden: [HTTPField.Name] = [
        .connection, HTTPField.Name("Keep-Alive")!, HTTPField.Name("Proxy-Connection")!, .transferEncoding, .upgrade,
    ]

    func handlerAdded(context: ChannelHandlerContext) {
        // An h2 stream's pipeline starts with the frame-to-HTTP codec (added before this handler).
        isHTTP2Stream = (try? context.pipeline.syncOperations.handler(type: HTTP2FramePayloadToHTTPServerCodec.self)) != nil
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard isHTTP2Stream, case .head(var head) = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        for name in Self.forbidden { head.headerFields[name] = nil }
        context.write(wrapOutboundOut(.head(head)), promise: promise)
    }
}
