public import HTTPTypes
public import NIOCore
public import NIOHTTP1
import MCPTransport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The fast relay's own HTTP/1.1 for its upstream connections: one request at a time, written as
// one buffer, and its response read straight into `HTTPFields` and body slices of the bytes read.
// NIOHTTP1's client codec built `HTTPHeaders`, checked them again on the way out, and parsed the
// answer through llhttp's callbacks into another `HTTPHeaders` that the relay then converted:
// about a fifth of the relay's instructions per request (bench/results.md, session 22).
//
// Strict where a lenient reading could let one response be taken for two: a `Content-Length`
// next to `Transfer-Encoding`, differing lengths, a folded header line, bytes after the end of
// a response, or a head larger than `maxHeadBytes` fail the exchange (502) and close the
// connection.

/// A response head as the upstream sent it.
public struct UpstreamResponseHead: Sendable {
    public var status: Int
    public var reasonPhrase: String
    /// The end-to-end fields in order, names checked (`HTTPField.Name`): the hop-by-hop ones
    /// (`HeaderPolicy`'s, and any `Connection` names) are not relayed, so they are not kept;
    /// `Content-Length` is (the body is relayed byte for byte).
    public var fields: HTTPFields
    /// Whether the connection can carry another request after this response.
    public var keepAlive: Bool
}

/// Parses one HTTP/1.1 response at a time from the bytes an upstream connection reads: a state
/// machine, fed buffer by buffer, that emits the head, body slices (no copy) and the end.
public struct UpstreamResponseParser {
    public enum Event {
        case head(UpstreamResponseHead)
        case body(ByteBuffer)
        case end
    }

    /// The upstream's answer cannot be read as one HTTP/1.1 response.
    public struct Malformed: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// The most a response head (status line and fields) may take.
    public static let maxHeadBytes = 64 * 1024
    /// The most a chunk-size line or a trailer line may take.
    static let maxLineBytes = 8 * 1024

    private enum State: Equatable {
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        /// The line break after a chunk's data.
        case chunkDataEnd
        case trailers
        /// No length: the body ends when the upstream closes.
        case untilClose
        case done
    }

    private var state = State.head
    /// Bytes read but not consumed yet (a head or chunk line split across reads).
    private var pending: ByteBuffer?
    /// How far into `pending` the search for the end of the head has looked.
    private var headScanned = 0
    private var keepAlive = true
    /// The connection's last head, kept across `reset()`.
    private var lastHead: LastHead?

    public init() {}

    /// Ready for the next response on the same connection.
    public mutating func reset() {
        let lastHead = lastHead.take()
        self = UpstreamResponseParser()
        self.lastHead = lastHead
    }

    /// Whether the connection can carry another request: the response ended, with keep-alive.
    public var reusable: Bool { state == .done && keepAlive }

    /// Consumes `bytes`, calling `emit` with each event in order.
    public mutating func parse(_ bytes: ByteBuffer, emit: (Event) -> Void) throws(Malformed) {
        var buffer: ByteBuffer
        if var pending = pending.take() {
            pending.writeImmutableBuffer(bytes)
            buffer = pending
        } else {
            buffer = bytes
        }
        try consume(&buffer, emit: emit)
        if buffer.readableBytes > 0 {
            if state == .done {
                keepAlive = false
                throw Malformed(reason: "the upstream sent bytes after the end of its response")
            }
            pending = buffer
        }
    }

    /// The upstream closed the connection: true when that ends the response (a body without a
    /// length); false when the response was cut short.
    public mutating func closed() -> Bool {
        guard state == .untilClose else { return state == .done }
        state = .done
        keepAlive = false
        return true
    }

    private mutating func consume(_ buffer: inout ByteBuffer, emit: (Event) -> Void) throws(Malformed) {
        while true {
            switch state {
            case .head:
                guard let head = try readHead(&buffer) else { return }
                // Interim answers (100 Continue, 103 Early Hints) are not relayed: the final one follows.
                if (100..<200).contains(head.status) {
                    guard head.status != 101 else { throw Malformed(reason: "the upstream switched protocols unasked") }
                    continue
                }
                emit(.head(head))
            case .body(let remaining):
                if remaining == 0 {
                    finish(emit)
                    continue
                }
                guard buffer.readableBytes > 0 else { return }
                let count = min(remaining, buffer.readableBytes)
                if let slice = buffer.readSlice(length: count) { emit(.body(slice)) }
                if count == remaining { finish(emit) } else { state = .body(remaining: remaining - count) }
            case .chunkSize:
                guard let line = try readLine(&buffer, what: "chunk size") else { return }
                let size = try Self.chunkSize(line)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard buffer.readableBytes > 0 else { return }
                let count = min(remaining, buffer.readableBytes)
                if let slice = buffer.readSlice(length: count) { emit(.body(slice)) }
                state = count == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - count)
            case .chunkDataEnd:
                guard let line = try readLine(&buffer, what: "chunk") else { return }
                guard line.readableBytes == 0 else { throw Malformed(reason: "a chunk is longer than its size") }
                state = .chunkSize
            case .trailers:
                // Trailer fields are not relayed (the client's answer is re-framed).
                guard let line = try readLine(&buffer, what: "trailer") else { return }
                if line.readableBytes == 0 { finish(emit) }
            case .untilClose:
                guard buffer.readableBytes > 0, let slice = buffer.readSlice(length: buffer.readableBytes) else { return }
                emit(.body(slice))
            case .done:
                return
            }
        }
    }

    private mutating func finish(_ emit: (Event) -> Void) {
        state = .done
        emit(.end)
    }

    /// One line (without its line break), or nil until it has arrived.
    private func readLine(_ buffer: inout ByteBuffer, what: String) throws(Malformed) -> ByteBuffer? {
        let found = buffer.withUnsafeReadableBytes { Self.lineFeed(in: $0, from: 0) }
        guard let found else {
            if buffer.readableBytes > Self.maxLineBytes { throw Malformed(reason: "a \(what) line is longer than \(Self.maxLineBytes) bytes") }
            return nil
        }
        let length = found
        guard length <= Self.maxLineBytes, var line = buffer.readSlice(length: length) else {
            throw Malformed(reason: "a \(what) line is longer than \(Self.maxLineBytes) bytes")
        }
        buffer.moveReaderIndex(forwardBy: 1)
        if line.readableBytesView.last == UInt8(ascii: "\r") { line.moveWriterIndex(to: line.writerIndex - 1) }
        return line
    }

    private static func chunkSize(_ line: ByteBuffer) throws(Malformed) -> Int {
        var size = 0
        var digits = 0
        for byte in line.readableBytesView {
            let digit: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = Int(byte - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = Int(byte - UInt8(ascii: "A")) + 10
            // Chunk extensions (after `;`, possibly after whitespace) carry nothing the relay uses.
            case UInt8(ascii: ";"), UInt8(ascii: " "), UInt8(ascii: "\t"):
                guard digits > 0 else { throw Malformed(reason: "a chunk size is missing") }
                return size
            default: throw Malformed(reason: "a chunk size is not hexadecimal")
            }
            digits += 1
            guard digits <= 15 else { throw Malformed(reason: "a chunk size is too large") }
            size = size << 4 | digit
        }
        guard digits > 0 else { throw Malformed(reason: "a chunk size is missing") }
        return size
    }

    // MARK: the head

    /// The head, once all of it has arrived; the state is then set for the body.
    private mutating func readHead(_ buffer: inout ByteBuffer) throws(Malformed) -> UpstreamResponseHead? {
        guard let length = try headLength(buffer) else { return nil }
        headScanned = 0
        guard let head = buffer.readSlice(length: length) else { return nil }
        return try head.withUnsafeReadableBytes { bytes throws(Malformed) in try parseHead(bytes) }
    }

    /// The length of the head with its empty last line, or nil when it has not all arrived.
    private mutating func headLength(_ buffer: ByteBuffer) throws(Malformed) -> Int? {
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            // A line break followed by an empty line (`\r\n` or a bare `\n`).
            var index = max(headScanned, 0)
            while index < bytes.count {
                guard let newline = Self.lineFeed(in: bytes, from: index) else { break }
                var next = newline + 1
                if next < bytes.count, bytes[next] == UInt8(ascii: "\r") { next += 1 }
                if next < bytes.count, bytes[next] == UInt8(ascii: "\n") { return next + 1 }
                index = next
            }
            return nil
        }
        if let found {
            guard found <= Self.maxHeadBytes else { throw Malformed(reason: "the response head is larger than \(Self.maxHeadBytes) bytes") }
            return found
        }
        guard buffer.readableBytes <= Self.maxHeadBytes else { throw Malformed(reason: "the response head is larger than \(Self.maxHeadBytes) bytes") }
        // Looked at all but the last bytes (an empty line may end there once more arrives).
        headScanned = max(0, buffer.readableBytes - 3)
        return nil
    }

    /// The fields of the connection's last response head, and the lines they were made from. An
    /// upstream answers every request of a connection with the same fields in the same order,
    /// mostly with the same values (`Date` changes once a second, `Content-Length` with the
    /// body): a line the same as the last head's line at its place is that line's field again,
    /// and a head whose names are the last head's, in order, starts from its `HTTPFields` (made
    /// field by field, each a generic call the compiler cannot specialize, they were ~40 % of
    /// the head's cost).
    private struct LastHead {
        struct Line {
            var bytes: [UInt8]
            var nameCount: Int
            var name: HTTPField.Name
            var hopByHop: Bool
            var field: HTTPField
        }

        var lines: [Line]
        /// The kept fields of `lines`, in order.
        var fields: HTTPFields
    }

    private mutating func parseHead(_ bytes: UnsafeRawBufferPointer) throws(Malformed) -> UpstreamResponseHead {
        var lines = HeadLines(bytes)
        guard let statusLine = lines.next() else { throw Malformed(reason: "the response has no status line") }
        let (http10, status, reason) = try Self.statusLine(statusLine)
        var contentLength: Int?
        var chunked = false
        var transferEncoded = false
        var close = http10
        var connectionListed: [String] = []
        // Taken out (one owner: the lines and fields change in place while the names match).
        var last = lastHead.take() ?? LastHead(lines: [], fields: HTTPFields())
        var lineCount = 0
        var keptCount = 0
        // Once the names stop matching the last head's: the lines, and the kept fields (before,
        // they are the last head's first `keptCount`).
        var remade: [LastHead.Line]?
        var kept: [HTTPField] = []
        while let line = lines.next() {
            guard !line.isEmpty else { break }
            guard line[line.startIndex] != UInt8(ascii: " "), line[line.startIndex] != UInt8(ascii: "\t") else {
                throw Malformed(reason: "the response has a folded header line")
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw Malformed(reason: "the response has a header line that is not a field") }
            let lineBytes = UnsafeRawBufferPointer(rebasing: line)
            let nameBytes = UnsafeRawBufferPointer(rebasing: line[line.startIndex..<colon])
            let valueBytes = Self.trimmed(UnsafeRawBufferPointer(rebasing: line[(colon + 1)...]))
            let index = lineCount
            lineCount += 1
            let name: HTTPField.Name
            let hopByHop: Bool
            let field: HTTPField
            if remade == nil, index < last.lines.count, Self.sameName(nameBytes, as: last.lines[index]) {
                (name, hopByHop) = (last.lines[index].name, last.lines[index].hopByHop)
                if Self.equals(lineBytes, last.lines[index].bytes) {
                    field = last.lines[index].field
                } else {
                    field = HTTPField(name: name, value: String(decoding: valueBytes, as: UTF8.self))
                    last.lines[index].bytes = Array(lineBytes)
                    last.lines[index].field = field
                    // The names so far are the last head's: so are the kept fields' places.
                    if !hopByHop { last.fields[keptCount] = field }
                }
            } else {
                if let known = Self.knownName(nameBytes) {
                    (name, hopByHop) = known
                } else {
                    guard let parsed = HTTPField.Name(String(decoding: nameBytes, as: UTF8.self)) else {
                        throw Malformed(reason: "the response has a header line that is not a field")
                    }
                    (name, hopByHop) = (parsed, HeaderPolicy.isHopByHopInResponse(parsed.canonicalName))
                }
                field = HTTPField(name: name, value: String(decoding: valueBytes, as: UTF8.self))
                if remade == nil {
                    remade = Array(last.lines.prefix(index))
                    kept = Array(last.fields.prefix(keptCount))
                }
                remade?.append(LastHead.Line(bytes: Array(lineBytes), nameCount: nameBytes.count, name: name, hopByHop: hopByHop, field: field))
            }
            switch name.canonicalName {
            case "content-length":
                guard let length = Self.contentLength(valueBytes), contentLength == nil || contentLength == length else {
                    throw Malformed(reason: "the response's Content-Length is not one length")
                }
                contentLength = length
            case "transfer-encoding":
                transferEncoded = true
                // Only the last coding frames the body (RFC 9112 §6.3).
                chunked = HeaderPolicy.listMembers(field.value).last == "chunked"
            case "connection" where Self.equals(valueBytes, "keep-alive") || Self.equals(valueBytes, "Keep-Alive"):
                if http10 { close = false }
            case "connection":
                for member in HeaderPolicy.listMembers(field.value) {
                    if member == "close" {
                        close = true
                    } else if member == "keep-alive" {
                        if http10 { close = false }
                    } else {
                        connectionListed.append(member)
                    }
                }
            default:
                break
            }
            if !hopByHop {
                if remade != nil { kept.append(field) }
                keptCount += 1
            }
        }
        if transferEncoded, contentLength != nil {
            throw Malformed(reason: "the response has both Transfer-Encoding and Content-Length")
        }
        if remade == nil, lineCount < last.lines.count {
            remade = Array(last.lines.prefix(lineCount))
            kept = Array(last.fields.prefix(keptCount))
        }
        var fields = HTTPFields()
        if !connectionListed.isEmpty {
            if remade == nil { kept = Array(last.fields) }
            // Which fields are kept depends on a value here: nothing for the next head to start from.
            lastHead = nil
            kept.removeAll { $0.name != .contentLength && connectionListed.contains($0.name.canonicalName) }
            // One call: `HTTPFields.append` goes through `insert(_:at:)` field by field.
            fields.append(contentsOf: kept)
        } else if let remade {
            fields.append(contentsOf: kept)
            lastHead = LastHead(lines: remade, fields: fields)
        } else {
            fields = last.fields
            lastHead = last
        }
        keepAlive = !close
        if (100..<200).contains(status) {
            state = .head
        } else if status == 204 || status == 304 {
            state = .body(remaining: 0)
        } else if transferEncoded {
            if chunked {
                state = .chunkSize
            } else {
                state = .untilClose
                keepAlive = false
            }
        } else if let contentLength {
            state = .body(remaining: contentLength)
        } else {
            state = .untilClose
            keepAlive = false
        }
        return UpstreamResponseHead(status: status, reasonPhrase: reason, fields: fields, keepAlive: keepAlive)
    }

    /// The names servers send most, in the two spellings seen on the wire: a name found here
    /// needs no new string, check or lower-casing. With whether it is hop-by-hop.
    private static func knownName(_ bytes: UnsafeRawBufferPointer) -> (HTTPField.Name, hopByHop: Bool)? {
        switch bytes.count {
        case 4:
            if equals(bytes, "Date") { return (.date, false) }
            if equals(bytes, "date") { return (Lowercase.date, false) }
        case 6:
            if equals(bytes, "Server") { return (.server, false) }
            if equals(bytes, "server") { return (Lowercase.server, false) }
        case 10:
            if equals(bytes, "Connection") { return (.connection, true) }
            if equals(bytes, "connection") { return (Lowercase.connection, true) }
        case 12:
            if equals(bytes, "Content-Type") { return (.contentType, false) }
            if equals(bytes, "content-type") { return (Lowercase.contentType, false) }
        case 14:
            if equals(bytes, "Content-Length") { return (.contentLength, false) }
            if equals(bytes, "content-length") { return (Lowercase.contentLength, false) }
            if equals(bytes, "mcp-session-id") { return (Lowercase.sessionID, false) }
            if equals(bytes, "Mcp-Session-Id") { return (MCPHeaders.sessionID, false) }
        case 17:
            if equals(bytes, "Transfer-Encoding") { return (.transferEncoding, true) }
            if equals(bytes, "transfer-encoding") { return (Lowercase.transferEncoding, true) }
        default:
            break
        }
        return nil
    }

    /// Lower-case spellings of `knownName`'s names, made once from the capitalized ones.
    private enum Lowercase {
        static let date = lowercase(.date)
        static let server = lowercase(.server)
        static let connection = lowercase(.connection)
        static let contentType = lowercase(.contentType)
        static let contentLength = lowercase(.contentLength)
        static let transferEncoding = lowercase(.transferEncoding)
        static let sessionID = lowercase(MCPHeaders.sessionID)

        /// The name spelled as its canonical form (never nil for these: they are tokens).
        private static func lowercase(_ name: HTTPField.Name) -> HTTPField.Name {
            HTTPField.Name(parsed: name.canonicalName) ?? name
        }
    }

    /// Whether the line `bytes` is `line`'s, byte for byte.
    private static func equals(_ bytes: UnsafeRawBufferPointer, _ line: [UInt8]) -> Bool {
        guard bytes.count == line.count else { return false }
        guard let base = bytes.baseAddress else { return true }
        return line.withUnsafeBytes { stored in
            guard let storedBase = stored.baseAddress else { return false }
            return memcmp(base, storedBase, bytes.count) == 0
        }
    }

    /// Whether `name` is the name of the line `line`.
    private static func sameName(_ name: UnsafeRawBufferPointer, as line: LastHead.Line) -> Bool {
        guard name.count == line.nameCount, let base = name.baseAddress else { return false }
        return line.bytes.withUnsafeBytes { stored in
            guard let storedBase = stored.baseAddress, stored.count >= name.count else { return false }
            return memcmp(base, storedBase, name.count) == 0
        }
    }

    static func equals(_ bytes: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount, let base = bytes.baseAddress else { return false }
        return memcmp(base, text.utf8Start, bytes.count) == 0
    }

    private static func statusLine(_ line: Slice<UnsafeRawBufferPointer>) throws(Malformed) -> (http10: Bool, status: Int, reason: String) {
        let bytes = UnsafeRawBufferPointer(rebasing: line)
        // `HTTP/1.x SP 3DIGIT SP reason`; the space before an empty reason is optional.
        guard bytes.count >= 12, bytes.starts(with: "HTTP/1.".utf8), bytes[8] == UInt8(ascii: " ") else {
            throw Malformed(reason: "the response's status line is not HTTP/1.x")
        }
        let minor = bytes[7]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1") else { throw Malformed(reason: "the response's status line is not HTTP/1.x") }
        var status = 0
        for index in 9..<12 {
            let byte = bytes[index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw Malformed(reason: "the response's status code is not three digits") }
            status = status * 10 + Int(byte - UInt8(ascii: "0"))
        }
        guard status >= 100 else { throw Malformed(reason: "the response's status code is not three digits") }
        if bytes.count > 12 {
            guard bytes[12] == UInt8(ascii: " ") else { throw Malformed(reason: "the response's status code is not three digits") }
        }
        let reason = bytes.count > 13 ? String(decoding: UnsafeRawBufferPointer(rebasing: bytes[13...]), as: UTF8.self) : ""
        return (minor == UInt8(ascii: "0"), status, reason)
    }

    /// A `Content-Length` value: digits, or a list of the same digits (RFC 9110 §8.6).
    private static func contentLength(_ value: UnsafeRawBufferPointer) -> Int? {
        var length: Int?
        var current = 0
        var digits = 0
        for byte in value {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                digits += 1
                guard digits <= 18 else { return nil }
                current = current * 10 + Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: ","):
                guard digits > 0, length == nil || length == current else { return nil }
                (length, current, digits) = (current, 0, 0)
            case UInt8(ascii: " "), UInt8(ascii: "\t"):
                continue
            default:
                return nil
            }
        }
        guard digits > 0, length == nil || length == current else { return nil }
        return current
    }

    private static func trimmed(_ value: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = value.startIndex
        var end = value.endIndex
        while start < end, value[start] == UInt8(ascii: " ") || value[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, value[end - 1] == UInt8(ascii: " ") || value[end - 1] == UInt8(ascii: "\t") || value[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: value[start..<end])
    }

    /// The index of the first line feed in `bytes[from...]` (`memchr`: a byte loop costs a few
    /// instructions per byte).
    static func lineFeed(in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from < bytes.count, let base = bytes.baseAddress, let found = memchr(base + from, 0x0A, bytes.count - from) else { return nil }
        return UnsafeRawPointer(found) - base
    }

    /// The lines of a head, without their line breaks (`\r\n` or `\n`).
    private struct HeadLines {
        let bytes: UnsafeRawBufferPointer
        var index: Int

        init(_ bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
            self.index = bytes.startIndex
        }

        mutating func next() -> Slice<UnsafeRawBufferPointer>? {
            guard index < bytes.endIndex else { return nil }
            let newline = UpstreamResponseParser.lineFeed(in: bytes, from: index) ?? bytes.endIndex
            var end = newline
            if end > index, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            defer { index = min(newline + 1, bytes.endIndex) }
            return bytes[index..<end]
        }
    }
}

/// Writes the fast relay's upstream request as one buffer. Every name must be a field name and
/// no value may hold a line break or NUL (nothing can be smuggled into a second header or request):
/// the client's own fields were checked on the way in, but a configured header or credential is
/// checked here too.
public enum UpstreamRequestWriter {
    public struct Refused: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public static func write(_ head: HTTPRequestHead, body: ByteBuffer, into buffer: inout ByteBuffer) throws(Refused) {
        guard isRequestTarget(head.uri) else { throw Refused(description: "the request target cannot be sent in HTTP/1.1") }
        // Checked and measured first, then copied in one pass: a `ByteBuffer.writeString` per
        // name, separator, value and line break costs more than the bytes.
        let method = head.method.rawValue
        var length = method.utf8.count + 1 + head.uri.utf8.count + 11 + 2
        for (name, value) in head.headers {
            guard isToken(name) else { throw Refused(description: "a header name is not a field name") }
            guard isFieldValue(value) else { throw Refused(description: "the value of \(name) holds a line break or NUL") }
            length += name.utf8.count + 2 + value.utf8.count + 2
        }
        buffer.reserveCapacity(minimumWritableBytes: length + body.readableBytes)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { output in
            var writer = HeadWriter(output: output)
            writer.copy(method)
            writer.copy(" ")
            writer.copy(head.uri)
            writer.copy(" HTTP/1.1\r\n")
            for (name, value) in head.headers {
                writer.copy(name)
                writer.copy(": ")
                writer.copy(value)
                writer.copy("\r\n")
            }
            writer.copy("\r\n")
            return writer.written
        }
        buffer.writeImmutableBuffer(body)
    }

    /// The fast relay's request, written straight from the client's fields: `POST target`, the
    /// headers `HeaderPolicy.upstreamRequestHeaders` sends for them, then `credentials`, `Host`
    /// and `Content-Length` as `HTTPHeaders.replaceOrAdd` would set them on those (an earlier header
    /// of the same name, in any case, is left out), then `body`: the bytes `write(_:body:into:)`
    /// writes for that head, without the head in between. The client's fields are not checked
    /// again (`HTTPFields` holds only token names and values without line breaks or NUL); every
    /// other name and value is.
    ///
    /// `method`: `POST`, or `GET` with no body (a session's stream), which is sent without a
    /// `Content-Length`, as AsyncHTTPClient sends it.
    public static func writePost(
        method: StaticString = "POST", target: String, fields: HTTPFields, rules: UpstreamHeaderRules, identity: CallerIdentity?, removingCookies: [String],
        clientAddress: String?, forwardedProto: String, forwardedHost: String?, credentials: [(name: String, value: String)], host: String,
        body: ByteBuffer?, into buffer: inout ByteBuffer
    ) throws(Refused) {
        guard isRequestTarget(target) else { throw Refused(description: "the request target cannot be sent in HTTP/1.1") }
        // What `replaceOrAdd` of each, in turn, leaves at the end.
        var trailing: [(name: String, value: String, checked: HeaderChecks)] = []
        trailing.reserveCapacity(credentials.count + 2)
        func replaceOrAdd(_ name: String, _ value: String, _ checked: HeaderChecks) {
            trailing.removeAll { equalIgnoringASCIICase($0.name, name) }
            trailing.append((name, value, checked))
        }
        for credential in credentials { replaceOrAdd(credential.name, credential.value, .none) }
        replaceOrAdd("Host", host, .name)
        if let body { replaceOrAdd("Content-Length", String(body.readableBytes), .both) }
        var sink = DirectHeaders(buffer: buffer, replaced: trailing)
        buffer = ByteBuffer()  // the sink holds the only reference while it writes (no copy on write)
        sink.writeStatic(method)
        sink.writeStatic(" ")
        sink.write(target)
        sink.writeStatic(" HTTP/1.1\r\n")
        HeaderPolicy.upstreamRequestHeaders(
            from: fields, rules: rules, identity: identity, identityToken: nil, removingCookies: removingCookies, clientAddress: clientAddress,
            forwardedProto: forwardedProto, forwardedHost: forwardedHost, into: &sink
        )
        sink.replaced = []
        for header in trailing { sink.add(header.name, header.value, checked: header.checked) }
        sink.writeStatic("\r\n")
        buffer = sink.buffer
        if let refused = sink.refused { throw refused }
        if let body { buffer.writeImmutableBuffer(body) }
    }

    /// `HTTPHeaders`' comparison of names: ASCII letters in any case.
    static func equalIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        var (a, b) = (a, b)
        return a.withUTF8 { a in
            b.withUTF8 { b in
                var index = 0
                while index < a.count {
                    let (x, y) = (a[index], b[index])
                    if x != y {
                        let lower = x | 0x20
                        guard lower == y | 0x20, lower >= UInt8(ascii: "a"), lower <= UInt8(ascii: "z") else { return false }
                    }
                    index &+= 1
                }
                return true
            }
        }
    }

    /// Writes each header line as it comes; the first name or value that cannot be sent is kept
    /// (and the request not sent).
    private struct DirectHeaders: UpstreamHeaderSink {
        var buffer: ByteBuffer
        /// Headers set after the policy's: their names are left out where they come earlier.
        var replaced: [(name: String, value: String, checked: HeaderChecks)]
        var refused: Refused?

        mutating func add(_ name: String, _ value: String, checked: HeaderChecks) {
            if !replaced.isEmpty, replaced.contains(where: { UpstreamRequestWriter.equalIgnoringASCIICase($0.name, name) }) { return }
            switch checked {
            case .both:
                // A pseudo-header's name is never a field of the request.
                guard name.utf8.first != UInt8(ascii: ":") else { return refuse("a header name is not a field name") }
            case .name:
                guard UpstreamRequestWriter.isFieldValue(value) else { return refuse("the value of \(name) holds a line break or NUL") }
            case .none:
                guard UpstreamRequestWriter.isToken(name) else { return refuse("a header name is not a field name") }
                guard UpstreamRequestWriter.isFieldValue(value) else { return refuse("the value of \(name) holds a line break or NUL") }
            }
            var (name, value) = (name, value)
            name.withUTF8 { name in
                value.withUTF8 { value in
                    let length = name.count + 2 + value.count + 2
                    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { output in
                        guard let target = output.baseAddress, length <= output.count else { return 0 }
                        if let source = name.baseAddress { target.copyMemory(from: source, byteCount: name.count) }
                        target.storeBytes(of: UInt8(ascii: ":"), toByteOffset: name.count, as: UInt8.self)
                        target.storeBytes(of: UInt8(ascii: " "), toByteOffset: name.count + 1, as: UInt8.self)
                        if let source = value.baseAddress { (target + name.count + 2).copyMemory(from: source, byteCount: value.count) }
                        target.storeBytes(of: UInt8(ascii: "\r"), toByteOffset: length - 2, as: UInt8.self)
                        target.storeBytes(of: UInt8(ascii: "\n"), toByteOffset: length - 1, as: UInt8.self)
                        return length
                    }
                }
            }
        }

        mutating func write(_ text: String) {
            buffer.writeString(text)
        }

        mutating func writeStatic(_ text: StaticString) {
            buffer.writeStaticString(text)
        }

        private mutating func refuse(_ reason: String) {
            if refused == nil { refused = Refused(description: reason) }
        }
    }

    /// Copies into space measured beforehand.
    private struct HeadWriter {
        let output: UnsafeMutableRawBufferPointer
        var written = 0

        mutating func copy(_ string: String) {
            var string = string
            string.withUTF8 { bytes in
                guard let source = bytes.baseAddress, let target = output.baseAddress, written + bytes.count <= output.count else { return }
                (target + written).copyMemory(from: source, byteCount: bytes.count)
                written += bytes.count
            }
        }

        mutating func copy(_ text: StaticString) {
            guard let target = output.baseAddress, written + text.utf8CodeUnitCount <= output.count else { return }
            (target + written).copyMemory(from: text.utf8Start, byteCount: text.utf8CodeUnitCount)
            written += text.utf8CodeUnitCount
        }
    }

    /// RFC 9110 §5.6.2 `tchar`, as two 64-bit masks over ASCII.
    private static let tokenLow: UInt64 = "!#$%&'*+-.^_`|~0123456789".utf8.reduce(0) { $1 < 64 ? $0 | 1 << UInt64($1) : $0 }
    private static let tokenHigh: UInt64 = "!#$%&'*+-.^_`|~ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8.reduce(0) {
        $1 >= 64 && $1 < 128 ? $0 | 1 << UInt64($1 - 64) : $0
    }

    /// RFC 9110 §5.6.2 `token`: the characters of a field name.
    static func isToken(_ name: String) -> Bool {
        var name = name
        let (low, high) = (tokenLow, tokenHigh)
        return name.withUTF8 { bytes in
            guard !bytes.isEmpty else { return false }
            var index = 0
            while index < bytes.count {
                let byte = bytes[index]
                let allowed = byte < 64 ? low & (1 << UInt64(byte)) != 0 : byte < 128 && high & (1 << UInt64(byte &- 64)) != 0
                guard allowed else { return false }
                index &+= 1
            }
            return true
        }
    }

    static func isFieldValue(_ value: String) -> Bool {
        var value = value
        return value.withUTF8 { bytes in
            !bytes.contains { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") || $0 == 0 }
        }
    }

    static func isRequestTarget(_ target: String) -> Bool {
        var target = target
        return target.withUTF8 { bytes in
            !bytes.isEmpty && !bytes.contains { $0 <= UInt8(ascii: " ") || $0 == 0x7F }
        }
    }
}
