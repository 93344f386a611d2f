import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// HTTP/1 request heads as `HTTPRequest`s and `HTTPResponse`s as HTTP/1 heads, in the place of
/// NIOHTTPTypesHTTP1's `HTTP1ToHTTPServerCodec` (which the connection's setup adds just before
/// this handler, and this handler takes out when it is added), making the same requests with less
/// work: see `RequestHeadConverter`.
final class HTTP1ServerCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var converter = RequestHeadConverter()

    func handlerAdded(context: ChannelHandlerContext) {
        // Nothing has passed through it yet: the first request's head waits in the upgrade
        // handler until the pipeline is complete. Without it in the pipeline (another setup),
        // this handler is the codec anyway.
        let operations = context.pipeline.syncOperations
        if let library = try? operations.handler(type: HTTP1ToHTTPServerCodec.self) {
            operations.removeHandler(library, promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            do {
                context.fireChannelRead(wrapInboundOut(.head(try converter.request(head))))
            } catch {
                context.fireErrorCaught(error)
            }
        case .body(let body):
            context.fireChannelRead(wrapInboundOut(.body(body)))
        case .end(let trailers):
            context.fireChannelRead(wrapInboundOut(.end(trailers.map { HTTPFields($0, splitCookie: false) })))
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            context.write(wrapOutboundOut(.head(HTTPResponseHead(response))), promise: promise)
        case .body(let body):
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: promise)
        case .end(let trailers):
            context.write(wrapOutboundOut(.end(trailers.map(HTTPHeaders.init))), promise: promise)
        }
    }
}

/// A connection's request heads as `HTTPRequest(head, secure: false, splitCookie: false)` makes
/// them (as the connection's setup asks of the library's codec): the first `Host` is the
/// authority and not a field, a later one is a field; a field whose name is not a token is left
/// out; `Cookie` stays one field.
///
/// The library's conversion costs ~15 000 instructions for a tools/call with eight fields: it
/// lower-cases every name into a new string to find `Host`, checks and lower-cases every name
/// again for its `HTTPField.Name`, adds each field through a generic call the compiler cannot
/// specialize from another module, and parses every target with Foundation's `URLComponents`.
/// Here an origin-form target (`/…`, every request but a proxy's) is the path as it is, the
/// names clients send most are made once, and a request whose field names are those of the
/// connection's last request, in the same order (a client sends the same fields on every request
/// of a connection), starts from that request's fields: only the values that changed are made
/// again. Anything else goes through the library's conversion.
struct RequestHeadConverter {
    /// The last request's fields, and how they were made: its field names and values as sent, and
    /// where each went (the field's position; `hostPosition` for the authority, `leftOut` for a
    /// name that is not a token).
    private struct Last {
        var names: [String]
        var values: [String]
        var positions: [Int]
        var fields: HTTPFields
    }

    private static let hostPosition = -1
    private static let leftOut = -2
    private var last: Last?

    mutating func request(_ head: HTTPRequestHead) throws -> HTTPRequest {
        // An origin-form target cannot have a scheme (RFC 9112 §3.2.1): the library's parse
        // would hand it back as it is.
        guard head.uri.utf8.first == UInt8(ascii: "/") else { return try HTTPRequest(head, secure: false, splitCookie: false) }
        let method = try HTTPRequest.Method(head.method)
        let (authority, fields) = reused(head.headers) ?? made(head.headers)
        return HTTPRequest(method: method, scheme: "http", authority: authority, path: head.uri, headerFields: fields)
    }

    /// The fields from the last request's, when the names are the same in the same order.
    private mutating func reused(_ headers: HTTPHeaders) -> (String?, HTTPFields)? {
        // Taken out: its arrays then have one owner, and a changed value is not a copy of them.
        guard var last = last.take(), headers.count == last.names.count else { return nil }
        var authority: String?
        var index = 0
        for (name, _) in headers {
            guard name == last.names[index] else { return nil }
            index += 1
        }
        index = 0
        for (_, value) in headers {
            defer { index += 1 }
            let position = last.positions[index]
            if position == Self.hostPosition { authority = value }
            guard position >= 0, value != last.values[index] else { continue }
            last.fields[position] = HTTPField(name: last.fields[position].name, value: value)
            last.values[index] = value
        }
        self.last = last
        return (authority, last.fields)
    }

    /// The fields made one by one (and remembered for the next request).
    private mutating func made(_ headers: HTTPHeaders) -> (String?, HTTPFields) {
        var authority: String?
        var fields = HTTPFields()
        fields.reserveCapacity(headers.count)
        var remembered = Last(names: [], values: [], positions: [], fields: HTTPFields())
        remembered.names.reserveCapacity(headers.count)
        remembered.values.reserveCapacity(headers.count)
        remembered.positions.reserveCapacity(headers.count)
        for (name, value) in headers {
            remembered.names.append(name)
            remembered.values.append(value)
            let fieldName: HTTPField.Name
            if let known = RequestFieldNames.known(name) {
                fieldName = known
            } else if authority == nil, RequestFieldNames.isHost(name) {
                authority = value
                remembered.positions.append(Self.hostPosition)
                continue
            } else if let parsed = HTTPField.Name(name) {
                fieldName = parsed
            } else {
                remembered.positions.append(Self.leftOut)
                continue
            }
            remembered.positions.append(fields.count)
            fields.add(HTTPField(name: fieldName, value: value))
        }
        remembered.fields = fields
        last = remembered
        return (authority, fields)
    }
}

/// The request field names clients send most, each in the spellings seen on the wire (an
/// `HTTPField.Name` keeps the spelling it was made from, and the upstream gets that spelling).
enum RequestFieldNames {
    private static let spellings = [
        "Accept", "accept", "Accept-Encoding", "accept-encoding", "Authorization", "authorization", "Connection", "connection",
        "Content-Length", "content-length", "Content-Type", "content-type", "Cookie", "cookie", "Last-Event-ID", "last-event-id",
        "MCP-Protocol-Version", "Mcp-Protocol-Version", "mcp-protocol-version", "Mcp-Session-Id", "mcp-session-id", "Mcp-Method", "mcp-method",
        "Mcp-Name", "mcp-name", "Origin", "origin", "traceparent", "tracestate", "User-Agent", "user-agent",
        "X-Forwarded-For", "x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-proto", "X-Forwarded-Host", "x-forwarded-host",
    ]

    /// By length: a lookup compares a name with the few of its length only.
    private static let byLength: [[(spelling: String, name: HTTPField.Name)]] = {
        var table = [[(spelling: String, name: HTTPField.Name)]](repeating: [], count: 32)
        for spelling in spellings {
            guard let name = HTTPField.Name(spelling), spelling.utf8.count < table.count else { continue }
            table[spelling.utf8.count].append((spelling, name))
        }
        return table
    }()

    /// The name made once for `spelling`, when it is one of those.
    static func known(_ spelling: String) -> HTTPField.Name? {
        let length = spelling.utf8.count
        guard length < byLength.count else { return nil }
        for entry in byLength[length] where entry.spelling == spelling {
            return entry.name
        }
        return nil
    }

    /// Whether `name` is `Host` in any case.
    static func isHost(_ name: String) -> Bool {
        if name == "Host" || name == "host" { return true }
        guard name.utf8.count == 4 else { return false }
        return name.lowercased() == "host"
    }
}

extension HTTPFields {
    /// `field` added after the others, as `append` adds it, for a fraction of the work. The
    /// collection's `append` and `replaceSubrange` are generic calls the compiler cannot
    /// specialize from another module (~1 000 instructions a field, copies through the type's
    /// metadata); the name subscripts are inlinable. They replace the fields of the name: a name
    /// already present (a repeated field) takes the generic way, and `Cookie` too (the
    /// subscript splits it at `; `).
    mutating func add(_ field: HTTPField) {
        if field.name == .cookie || contains(field.name) {
            append(field)
        } else {
            self[fields: field.name] = [field]
        }
    }
}
