public import Foundation
import MCPMessages

/// One line of the audit log: an event name and its fields, written as one JSON object with
/// `time` (RFC 3339, UTC, milliseconds) and `event` first. Fields with no value are left out.
public struct AuditEvent: Sendable {
    /// A field's value.
    public enum Value: Sendable, Equatable {
        case string(String)
        case integer(Int64)
        /// Already JSON (tool arguments, after redaction).
        case json(String)
    }

    public var name: String
    public var fields: [(String, Value)]
    public var time: Date

    public init(_ name: String, time: Date = Date(), _ fields: [(String, Value?)]) {
        self.name = name
        self.time = time
        self.fields = fields.compactMap { key, value in value.map { (key, $0) } }
    }

    /// The line, newline included.
    public var line: String { String(decoding: bytes, as: UTF8.self) }

    /// The line's UTF-8 bytes, newline included: what the audit log writes (built without
    /// intermediate strings; one line per MCP request).
    public var bytes: [UInt8] {
        AuditLineWriter.bytes { append(to: &$0) }
    }

    /// The line written to `out`.
    public func append(to out: inout AuditLineWriter) {
        AuditLine.start(name, time: time, to: &out)
        for (key, value) in fields {
            out.append(UInt8(ascii: ","))
            JSONText.appendQuoted(key, to: &out)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .string(let string): JSONText.appendQuoted(string, to: &out)
            case .integer(let number): JSONText.appendInteger(number, to: &out)
            case .json(let json): out.appendUnescaped(json)
            }
        }
        AuditLine.end(to: &out)
    }
}

/// An audit line written field by field straight into the log's batch, for the line written on
/// every request (`mcp.request`): no `AuditEvent`, no array of fields, no intermediate strings.
/// The result is the same JSON `AuditEvent.append` writes: `time` and `event` first, fields with
/// no value left out. Keys are literals that need no escaping.
public enum AuditLine {
    /// `{"time":"…","event":"<name>"`.
    public static func start(_ name: String, time: Date, to out: inout AuditLineWriter) {
        out.append(#"{"time":""#)
        JSONText.appendTimestamp(time, to: &out)
        out.append(#"","event":"#)
        JSONText.appendQuoted(name, to: &out)
    }

    /// `{"time":"…","event":"<name>"` for an event named by a literal that needs no escaping
    /// (the line written on every request): no look at its bytes.
    public static func start(_ name: StaticString, time: Date, to out: inout AuditLineWriter) {
        out.append(#"{"time":""#)
        JSONText.appendTimestamp(time, to: &out)
        out.append(#"","event":""#)
        out.append(name)
        out.append(UInt8(ascii: "\""))
    }

    /// `,"<key>":"<value>"`, or nothing without a value.
    public static func field(_ key: StaticString, _ value: String?, to out: inout AuditLineWriter) {
        guard let value else { return }
        appendKey(key, to: &out)
        JSONText.appendQuoted(value, to: &out)
    }

    /// `,"<key>":<number>`, or nothing without a value.
    public static func field(_ key: StaticString, _ value: Int64?, to out: inout AuditLineWriter) {
        guard let value else { return }
        appendKey(key, to: &out)
        JSONText.appendInteger(value, to: &out)
    }

    /// `,"<key>":<json>` for a value that is JSON already, or nothing without a value.
    public static func field(_ key: StaticString, json value: String?, to out: inout AuditLineWriter) {
        guard let value else { return }
        appendKey(key, to: &out)
        out.appendUnescaped(value)
    }

    /// Fields encoded once ahead (`,"router":"…",…`, from `fields(_:)`), e.g. a route's.
    public static func encoded(_ fields: [UInt8], to out: inout AuditLineWriter) {
        fields.withUnsafeBytes { out.append($0) }
    }

    /// `}` and the newline.
    public static func end(to out: inout AuditLineWriter) {
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }

    /// String fields encoded once for `encoded(_:to:)` (values escaped as any other).
    public static func fields(_ fields: [(key: String, value: String)]) -> [UInt8] {
        AuditLineWriter.bytes { out in
            for (key, value) in fields {
                out.append(UInt8(ascii: ","))
                JSONText.appendQuoted(key, to: &out)
                out.append(UInt8(ascii: ":"))
                JSONText.appendQuoted(value, to: &out)
            }
        }
    }

    private static func appendKey(_ key: StaticString, to out: inout AuditLineWriter) {
        out.appendKey(UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
    }
}

/// Where security events and request records go. The gateway's `AuditLog` writes them to a file;
/// without `audit:` nothing is recorded.
public protocol AuditSink: Sendable {
    func record(_ event: AuditEvent)
    /// One line written by `encode` (a whole JSON object and its newline, with `AuditLine`):
    /// the per-request line's way, without an `AuditEvent`.
    func recordLine(_ encode: (inout AuditLineWriter) -> Void)
}

/// Tool arguments as the audit log shows them.
public enum AuditArguments {
    /// `arguments` (raw JSON) with the value of every key containing one of `keys`
    /// (case-insensitive) replaced by "[redacted]", at any depth. Nil when it is not JSON.
    public static func redacted(_ json: String, keys: [String]) -> String? {
        guard let data = json.data(using: .utf8), let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return nil }
        let lowered = keys.map { $0.lowercased() }
        func redact(_ value: Any) -> Any {
            if let object = value as? [String: Any] {
                var result: [String: Any] = [:]
                for (key, inner) in object {
                    let sensitive = lowered.contains { !$0.isEmpty && key.lowercased().contains($0) }
                    result[key] = sensitive ? "[redacted]" : redact(inner)
                }
                return result
            }
            if let array = value as? [Any] { return array.map(redact) }
            return value
        }
        guard let out = try? JSONSerialization.data(withJSONObject: redact(value), options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes]) else { return nil }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The two pieces every JSON line the gateway writes is made of (the audit log, `log.format:
/// json`): string literals and timestamps.
public enum JSONText {
    /// A JSON string literal: quotes, backslashes and control characters escaped.
    public static func quoted(_ text: String) -> String {
        String(decoding: AuditLineWriter.bytes { appendQuoted(text, to: &$0) }, as: UTF8.self)
    }

    /// `quoted(text)`'s bytes appended to `out`. A Swift string is valid UTF-8, so every byte
    /// other than the ones JSON reserves is copied as it is.
    public static func appendQuoted(_ text: String, to out: inout AuditLineWriter) {
        out.append(UInt8(ascii: "\""))
        // Most values (names, ids, addresses) need no escape: copied whole.
        let plain = text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard !needsEscaping(UnsafeRawBufferPointer(bytes)) else { return false }
            out.append(UnsafeRawBufferPointer(bytes))
            return true
        }
        if plain == true {
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(#"\""#)
            case UInt8(ascii: "\\"): out.append(#"\\"#)
            case UInt8(ascii: "\n"): out.append(#"\n"#)
            case UInt8(ascii: "\r"): out.append(#"\r"#)
            case UInt8(ascii: "\t"): out.append(#"\t"#)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(#"\u00"#)
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Whether any byte is one JSON escapes in a string: a control character, `"` or `\`.
    /// Eight bytes at a time (every value of every audit and JSON log line is scanned).
    static func needsEscaping(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index &+ 8 <= bytes.count {
            if !JSONBytes.isPlain(JSONBytes.word(bytes, at: index)) { return true }
            index &+= 8
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return true }
            index &+= 1
        }
        return false
    }

    /// A decimal integer's digits appended to `out`.
    public static func appendInteger(_ number: Int64, to out: inout AuditLineWriter) {
        if number < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = number.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buffer in
            var index = buffer.count
            repeat {
                index -= 1
                buffer[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            out.append(UnsafeRawBufferPointer(rebasing: buffer[index...]))
        }
    }

    public static func timestamp(_ date: Date) -> String {
        String(decoding: AuditLineWriter.bytes { appendTimestamp(date, to: &$0) }, as: UTF8.self)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-12-04T13:29:56.500Z`. Written on every
    /// audit line and JSON log line: the civil date is computed from the day number (no
    /// `gmtime_r`), and the 24 bytes are appended at once.
    public static func appendTimestamp(_ date: Date, to out: inout AuditLineWriter) {
        let totalMillis = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let (days, millisOfDay) = floorDivision(totalMillis, 86_400_000)
        let (year, month, day) = civilDate(daysSince1970: days)
        let secondsOfDay = millisOfDay / 1000
        var text: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                   UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, UInt8(ascii: "-"), 0, 0, UInt8(ascii: "-"), 0, 0, UInt8(ascii: "T"), 0,
             0, UInt8(ascii: ":"), 0, 0, UInt8(ascii: ":"), 0, 0, UInt8(ascii: "."), 0, 0, 0, UInt8(ascii: "Z"))
        withUnsafeMutableBytes(of: &text) { bytes in
            func put(_ value: Int64, at offset: Int, width: Int) {
                var rest = max(0, value)
                var index = offset + width - 1
                while index >= offset {
                    bytes[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                    rest /= 10
                    index -= 1
                }
            }
            put(year, at: 0, width: 4)
            put(month, at: 5, width: 2)
            put(day, at: 8, width: 2)
            put(secondsOfDay / 3600, at: 11, width: 2)
            put(secondsOfDay / 60 % 60, at: 14, width: 2)
            put(secondsOfDay % 60, at: 17, width: 2)
            put(millisOfDay % 1000, at: 20, width: 3)
            out.append(UnsafeRawBufferPointer(bytes))
        }
    }

    /// Quotient and remainder rounded toward negative infinity (instants before 1970).
    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let remainder = value % divisor
        return remainder < 0 ? (value / divisor - 1, remainder + divisor) : (value / divisor, remainder)
    }

    /// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
    /// `civil_from_days`).
    static func civilDate(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

/// Where a JSON line is written: a buffer on the caller's stack while the line fits in it (every
/// usual line), an array from the first byte that does not (tool arguments written in full can
/// be large). An append is a bounds check and a copy: writing into an array costs a uniqueness
/// and a capacity check per piece, and a line has some sixty pieces.
public struct AuditLineWriter {
    private let base: UnsafeMutablePointer<UInt8>
    /// The room in `base`; 0 once the line moved to `spilled`.
    private var capacity: Int
    private var count = 0
    private var spilled: [UInt8]?
    /// What fits on the stack: a `mcp.request` line without arguments is ~400 bytes. At most
    /// 1 024: the standard library puts a temporary allocation up to that size on the stack
    /// without asking, and a larger one on the heap wherever it cannot tell how much stack the
    /// thread has left (an event loop's thread: a `malloc` and `free` per line, ~1 000
    /// instructions).
    public static let stackCapacity = 1024

    private init(base: UnsafeMutablePointer<UInt8>, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    /// The bytes `encode` writes, handed to `use` (valid only during the call).
    public static func withLine<Result>(_ encode: (inout AuditLineWriter) -> Void, _ use: (UnsafeRawBufferPointer) -> Result) -> Result {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: stackCapacity) { buffer in
            if let base = buffer.baseAddress { return write(into: base, capacity: buffer.count, encode, use) }
            let heap = UnsafeMutablePointer<UInt8>.allocate(capacity: stackCapacity)
            defer { heap.deallocate() }
            return write(into: heap, capacity: stackCapacity, encode, use)
        }
    }

    private static func write<Result>(
        into base: UnsafeMutablePointer<UInt8>, capacity: Int, _ encode: (inout AuditLineWriter) -> Void, _ use: (UnsafeRawBufferPointer) -> Result
    ) -> Result {
        var writer = AuditLineWriter(base: base, capacity: capacity)
        encode(&writer)
        if let spilled = writer.spilled { return spilled.withUnsafeBytes(use) }
        return use(UnsafeRawBufferPointer(start: base, count: writer.count))
    }

    /// The bytes `encode` writes, as an array.
    public static func bytes(_ encode: (inout AuditLineWriter) -> Void) -> [UInt8] {
        withLine(encode) { Array($0) }
    }

    @inline(__always)
    public mutating func append(_ byte: UInt8) {
        if count < capacity {
            base[count] = byte
            count &+= 1
        } else {
            appendSpilled(byte)
        }
    }

    @inline(__always)
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        if bytes.count <= capacity &- count {
            (base + count).update(from: source.assumingMemoryBound(to: UInt8.self), count: bytes.count)
            count &+= bytes.count
        } else {
            appendSpilled(bytes)
        }
    }

    /// `,"<key>":` with one bounds check (a line has a dozen keys).
    @inline(__always)
    mutating func appendKey(_ key: UnsafeRawBufferPointer) {
        guard let source = key.baseAddress, key.count &+ 4 <= capacity &- count else {
            append(UInt8(ascii: ","))
            append(UInt8(ascii: "\""))
            append(key)
            append(UInt8(ascii: "\""))
            append(UInt8(ascii: ":"))
            return
        }
        let target = base + count
        target[0] = UInt8(ascii: ",")
        target[1] = UInt8(ascii: "\"")
        (target + 2).update(from: source.assumingMemoryBound(to: UInt8.self), count: key.count)
        target[2 &+ key.count] = UInt8(ascii: "\"")
        target[3 &+ key.count] = UInt8(ascii: ":")
        count &+= key.count &+ 4
    }

    /// A literal's bytes (keys, punctuation).
    @inline(__always)
    public mutating func append(_ literal: StaticString) {
        append(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// A string's UTF-8 bytes as they are (JSON already).
    public mutating func appendUnescaped(_ text: String) {
        var text = text
        text.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    private mutating func appendSpilled(_ byte: UInt8) {
        var array = takeSpilled()
        array.append(byte)
        spilled = array
    }

    private mutating func appendSpilled(_ bytes: UnsafeRawBufferPointer) {
        var array = takeSpilled()
        array.append(contentsOf: bytes)
        spilled = array
    }

    /// The spilled array, owned uniquely (nil left behind), made from the stack's bytes at the
    /// first spill.
    private mutating func takeSpilled() -> [UInt8] {
        if let array = spilled {
            spilled = nil
            return array
        }
        var array = [UInt8]()
        array.reserveCapacity(count * 2 + 4096)
        array.append(contentsOf: UnsafeBufferPointer(start: base, count: count))
        capacity = 0
        return array
    }
}
