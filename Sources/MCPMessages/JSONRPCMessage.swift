public import NIOCore

/// One JSON-RPC 2.0 message, kept as the bytes it arrived in plus the positions of its envelope.
public struct JSONRPCMessage: Sendable {
    public enum Kind: Sendable, Equatable {
        case request
        case notification
        case response
        case errorResponse
    }

    public enum ParseError: Error, Equatable, Sendable {
        /// Not JSON at all (JSON-RPC -32700).
        case invalidJSON
        /// JSON, but not a JSON-RPC 2.0 message (JSON-RPC -32600).
        case invalidMessage(String)
    }

    public let bytes: ByteBuffer
    public let kind: Kind
    public let method: String?
    /// The id exactly as written (`7`, `"abc"`), for echoing back unchanged.
    public let rawID: String?
    let idRange: Range<Int>?
    let paramsRange: Range<Int>?

    public init(parsing bytes: ByteBuffer) throws(ParseError) {
        self.bytes = bytes
        let envelope = try bytes.withUnsafeReadableBytes { buffer throws(ParseError) in
            try Self.scanEnvelope(buffer)
        }
        (kind, method, rawID, idRange, paramsRange) = envelope
    }

    /// A message whose top-level members a strict reading found already
    /// (`StrictJSON.validateTopLevelMembers`): the envelope is read from them, not scanned again.
    public init(parsing bytes: ByteBuffer, members: [JSONScanner.Member]) throws(ParseError) {
        self.bytes = bytes
        let envelope = try bytes.withUnsafeReadableBytes { buffer throws(ParseError) in
            try Self.envelope(of: members, in: buffer)
        }
        (kind, method, rawID, idRange, paramsRange) = envelope
    }

    public init(parsing text: String) throws(ParseError) {
        try self.init(parsing: ByteBuffer(string: text))
    }

    public var isRequest: Bool { kind == .request }
    public var isResponse: Bool { kind == .response || kind == .errorResponse }

    private static func scanEnvelope(_ buffer: UnsafeRawBufferPointer) throws(ParseError)
        -> (Kind, String?, String?, Range<Int>?, Range<Int>?)
    {
        let members: [JSONScanner.Member]
        do {
            members = try JSONScanner.members(of: buffer, in: 0..<buffer.count)
        } catch .notAnObject {
            do {
                try JSONScanner.validate(buffer, in: 0..<buffer.count)
            } catch {
                throw .invalidJSON
            }
            throw .invalidMessage("a JSON-RPC message must be a JSON object")
        } catch {
            throw .invalidJSON
        }
        return try envelope(of: members, in: buffer)
    }

    /// The envelope of a JSON object's members, in order.
    private static func envelope(of members: [JSONScanner.Member], in buffer: UnsafeRawBufferPointer) throws(ParseError)
        -> (Kind, String?, String?, Range<Int>?, Range<Int>?)
    {
        var version: String?
        var method: String?
        var idRange: Range<Int>?
        var paramsRange: Range<Int>?
        var hasResult = false
        var hasError = false
        for member in members {
            switch member.key {
            case "jsonrpc": version = JSONScanner.string(buffer, in: member.value)
            case "method":
                guard let name = JSONScanner.string(buffer, in: member.value) else {
                    throw .invalidMessage("\"method\" must be a string")
                }
                method = name
            case "id": idRange = member.value
            // The first, as `JSONScanner.member(named:)` finds it: every lookup under `params`
            // starts here, so a body with two (only a non-strict one can have them) reads one way.
            case "params": if paramsRange == nil { paramsRange = member.value }
            case "result": hasResult = true
            case "error": hasError = true
            default: continue
            }
        }
        guard version == "2.0" else { throw .invalidMessage("\"jsonrpc\" must be \"2.0\"") }
        var rawID: String?
        if let idRange {
            let first = buffer[idRange.lowerBound]
            let isString = first == UInt8(ascii: "\"")
            let isNumber = first == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first)
            let isNull = first == UInt8(ascii: "n")
            guard isString || isNumber || (isNull && (hasResult || hasError)) else {
                throw .invalidMessage("\"id\" must be a string or a number")
            }
            rawID = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[idRange]), as: UTF8.self)
        }
        if let method {
            guard !hasResult, !hasError else { throw .invalidMessage("a message cannot have both \"method\" and \"result\"/\"error\"") }
            return (idRange == nil ? .notification : .request, method, rawID, idRange, paramsRange)
        }
        guard hasResult != hasError else { throw .invalidMessage("a message needs \"method\", or exactly one of \"result\" and \"error\"") }
        guard idRange != nil else { throw .invalidMessage("a response needs an \"id\"") }
        return (hasResult ? .response : .errorResponse, nil, rawID, idRange, paramsRange)
    }

    /// The same message with its id replaced by `newRawID` (raw JSON, e.g. `17` or `"g-3"`);
    /// every other byte is kept as it was.
    public func replacingID(with newRawID: String) -> ByteBuffer {
        guard let idRange else { return bytes }
        var output = ByteBufferAllocator().buffer(capacity: bytes.readableBytes - idRange.count + newRawID.utf8.count)
        let start = bytes.readerIndex
        output.writeImmutableBuffer(bytes.getSlice(at: start, length: idRange.lowerBound) ?? ByteBuffer())
        output.writeString(newRawID)
        output.writeImmutableBuffer(bytes.getSlice(at: start + idRange.upperBound, length: bytes.readableBytes - idRange.upperBound) ?? ByteBuffer())
        return output
    }

    /// A member of `params` as raw JSON (e.g. `params.progressToken`); `path` descends objects.
    public func paramsValue(_ path: String...) -> String? {
        value(at: ["params"] + path)
    }

    /// A string member of `params` (decoded), e.g. `params.protocolVersion`.
    public func paramsString(_ path: String...) -> String? {
        string(at: ["params"] + path)
    }

    /// Raw JSON of the value at `path` (object keys from the top level), if present.
    public func value(at path: [String]) -> String? {
        bytes.withUnsafeReadableBytes { buffer -> String? in
            guard let range = range(of: path, in: buffer) else { return nil }
            return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[range]), as: UTF8.self)
        }
    }

    /// The decoded string member `key` of `params`, if present and a string: `string(at:
    /// ["params", key])` from where the parse found `params`, for what is asked on every request
    /// (the tool name).
    public func paramString(_ key: StaticString) -> String? {
        guard let paramsRange else { return nil }
        return bytes.withUnsafeReadableBytes { buffer -> String? in
            let found = key.withUTF8Buffer { name in JSONScanner.member(named: name, of: buffer, in: paramsRange) }
            guard let found else { return nil }
            return JSONScanner.string(buffer, in: found)
        }
    }

    /// The decoded string at `path`, if present and a string.
    public func string(at path: [String]) -> String? {
        bytes.withUnsafeReadableBytes { buffer -> String? in
            guard let range = range(of: path, in: buffer) else { return nil }
            return JSONScanner.string(buffer, in: range)
        }
    }

    private func range(of path: [String], in buffer: UnsafeRawBufferPointer) -> Range<Int>? {
        var range = 0..<buffer.count
        var keys = path[...]
        // `params` is where the parse found it: no walk over the envelope again.
        if keys.first == "params" {
            guard let paramsRange else { return nil }
            range = paramsRange
            keys = keys.dropFirst()
        }
        for key in keys {
            guard let value = JSONScanner.member(named: key, of: buffer, in: range) else { return nil }
            range = value
        }
        return range
    }

    /// A top-level member as raw JSON.
    public func member(_ key: String) -> String? {
        bytes.withUnsafeReadableBytes { buffer -> String? in
            guard let members = try? JSONScanner.members(of: buffer, in: 0..<buffer.count),
                  let member = members.first(where: { $0.key == key })
            else { return nil }
            return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[member.value]), as: UTF8.self)
        }
    }

    public var text: String { String(buffer: bytes) }
}

/// A POST body: one message, or (2025-03-26 only) a batch.
public enum JSONRPCPayload: Sendable {
    case single(JSONRPCMessage)
    case batch([JSONRPCMessage])

    /// Batches (2025-03-26 and earlier only) are bounded: every message in one costs bookkeeping
    /// in the session it is sent to, and no real client sends hundreds at once.
    public static let maxBatchSize = 100

    public init(parsing bytes: ByteBuffer) throws(JSONRPCMessage.ParseError) {
        let first = bytes.withUnsafeReadableBytes { JSONScanner.firstSignificantByte($0, in: 0..<$0.count) }
        guard first == UInt8(ascii: "[") else {
            self = .single(try JSONRPCMessage(parsing: bytes))
            return
        }
        let ranges: [Range<Int>]
        do {
            ranges = try bytes.withUnsafeReadableBytes { buffer throws(JSONScanner.Failure) in
                try JSONScanner.elements(of: buffer, in: 0..<buffer.count)
            }
        } catch {
            throw .invalidJSON
        }
        guard !ranges.isEmpty else { throw .invalidMessage("an empty batch is not a JSON-RPC message") }
        guard ranges.count <= Self.maxBatchSize else {
            throw .invalidMessage("a batch may hold at most \(Self.maxBatchSize) messages (this one holds \(ranges.count))")
        }
        var messages: [JSONRPCMessage] = []
        for range in ranges {
            guard let slice = bytes.getSlice(at: bytes.readerIndex + range.lowerBound, length: range.count) else { throw .invalidJSON }
            messages.append(try JSONRPCMessage(parsing: slice))
        }
        self = .batch(messages)
    }
}

/// JSON-RPC error objects the gateway writes itself.
public enum JSONRPCErrorResponse {
    public static let parseError = -32700
    public static let invalidRequest = -32600
    public static let methodNotFound = -32601
    public static let invalidParams = -32602
    public static let internalError = -32603

    /// `{"jsonrpc":"2.0","id":<rawID or null>,"error":{"code":…,"message":…[,"data":…]}}`
    public static func make(rawID: String?, code: Int, message: String, dataJSON: String? = nil) -> ByteBuffer {
        var text = "{\"jsonrpc\":\"2.0\",\"id\":\(rawID ?? "null"),\"error\":{\"code\":\(code),\"message\":\(jsonString(message))"
        if let dataJSON { text += ",\"data\":\(dataJSON)" }
        text += "}}"
        return ByteBuffer(string: text)
    }

    /// A JSON string literal for `value`.
    public static func jsonString(_ value: String) -> String {
        var output = "\""
        output.reserveCapacity(value.utf8.count + 2)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case let control where control.value < 0x20:
                output += "\\u" + String(repeating: "0", count: 4 - String(control.value, radix: 16).count) + String(control.value, radix: 16)
            default: output.unicodeScalars.append(scalar)
            }
        }
        return output + "\""
    }
}

// MARK: splicing (2026-07-28 translation without re-encoding)

extension JSONRPCMessage {
    /// The message without `params._meta`, when every key of that `_meta` starts with `prefix`
    /// (nil otherwise, and the message unchanged when it has no `_meta`). Bytes outside the removed
    /// member are kept as they are.
    public func removingParamsMeta(ifOnlyKeysWithPrefix prefix: String) -> JSONRPCMessage? {
        let cut: Range<Int>?? = bytes.withUnsafeReadableBytes { buffer -> Range<Int>?? in
            guard let params = range(of: ["params"], in: buffer), let metaValue = range(of: ["params", "_meta"], in: buffer) else {
                return .some(nil)
            }
            guard let members = try? JSONScanner.members(of: buffer, in: metaValue), members.allSatisfy({ $0.key.hasPrefix(prefix) }) else {
                return nil
            }
            return .some(Self.memberSpan(valueRange: metaValue, key: "_meta", container: params, in: buffer))
        }
        guard let found = cut else { return nil }
        guard let span = found else { return self }
        var spliced = ByteBuffer()
        spliced.reserveCapacity(bytes.readableBytes - span.count)
        let start = bytes.readerIndex
        if let head = bytes.getSlice(at: start, length: span.lowerBound) { spliced.writeImmutableBuffer(head) }
        if let tail = bytes.getSlice(at: start + span.upperBound, length: bytes.readableBytes - span.upperBound) { spliced.writeImmutableBuffer(tail) }
        return try? JSONRPCMessage(parsing: spliced)
    }

    /// A response with `members` (raw JSON object members, e.g. `"resultType":"complete"`) written
    /// at the start of its `result` object; nil when `result` is not an object.
    public func insertingIntoResult(_ members: String) -> ByteBuffer? {
        let position: (Int, Bool)? = bytes.withUnsafeReadableBytes { buffer in
            guard let result = range(of: ["result"], in: buffer), result.count >= 2, buffer[result.lowerBound] == UInt8(ascii: "{") else { return nil }
            let empty = (try? JSONScanner.members(of: buffer, in: result))?.isEmpty ?? false
            return (result.lowerBound + 1, empty)
        }
        guard let (offset, empty) = position else { return nil }
        var spliced = ByteBuffer()
        spliced.reserveCapacity(bytes.readableBytes + members.utf8.count + 1)
        let start = bytes.readerIndex
        if let head = bytes.getSlice(at: start, length: offset) { spliced.writeImmutableBuffer(head) }
        spliced.writeString(members)
        if !empty { spliced.writeString(",") }
        if let tail = bytes.getSlice(at: start + offset, length: bytes.readableBytes - offset) { spliced.writeImmutableBuffer(tail) }
        return spliced
    }

    /// The message with the value at `path` (an existing member, e.g. `params.name`) replaced by
    /// `rawJSON`; every other byte kept. Nil when there is no such member.
    public func replacingValue(at path: [String], withRawJSON rawJSON: String) -> JSONRPCMessage? {
        let found: Range<Int>? = bytes.withUnsafeReadableBytes { range(of: path, in: $0) }
        guard let found else { return nil }
        var spliced = ByteBuffer()
        spliced.reserveCapacity(bytes.readableBytes - found.count + rawJSON.utf8.count)
        let start = bytes.readerIndex
        if let head = bytes.getSlice(at: start, length: found.lowerBound) { spliced.writeImmutableBuffer(head) }
        spliced.writeString(rawJSON)
        if let tail = bytes.getSlice(at: start + found.upperBound, length: bytes.readableBytes - found.upperBound) { spliced.writeImmutableBuffer(tail) }
        return try? JSONRPCMessage(parsing: spliced)
    }

    /// Whether `result` has a member named `key`.
    public func resultHasMember(_ key: String) -> Bool {
        bytes.withUnsafeReadableBytes { range(of: ["result", key], in: $0) != nil }
    }

    /// The byte span of the member `"key": value` inside `container`, including one adjacent comma.
    private static func memberSpan(valueRange: Range<Int>, key: String, container: Range<Int>, in buffer: UnsafeRawBufferPointer) -> Range<Int>? {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        var index = valueRange.lowerBound - 1
        while index > container.lowerBound, isSpace(buffer[index]) { index -= 1 }
        guard buffer[index] == UInt8(ascii: ":") else { return nil }
        index -= 1
        while index > container.lowerBound, isSpace(buffer[index]) { index -= 1 }
        // The key as written: `"_meta"` (no escapes in the keys this is used for).
        let quoted = Array("\"\(key)\"".utf8)
        let keyStart = index - quoted.count + 1
        guard keyStart > container.lowerBound, Array(buffer[keyStart...index]) == quoted else { return nil }
        var end = valueRange.upperBound
        while end < container.upperBound - 1, isSpace(buffer[end]) { end += 1 }
        if buffer[end] == UInt8(ascii: ",") {
            return keyStart..<(end + 1)
        }
        var before = keyStart - 1
        while before > container.lowerBound, isSpace(buffer[before]) { before -= 1 }
        if buffer[before] == UInt8(ascii: ",") {
            return before..<valueRange.upperBound
        }
        return keyStart..<valueRange.upperBound
    }
}
