#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A validating, non-allocating scanner over JSON bytes that reports the top-level members of an
/// object as byte ranges. The gateway only needs a JSON-RPC message's envelope (id, method,
/// result/error, a few params); scanning instead of decoding leaves payloads untouched, so a
/// 10 MiB tool result is forwarded without being re-encoded.
public struct JSONScanner {
    public struct Member {
        public var key: String
        public var value: Range<Int>
    }

    public enum Failure: Error, Equatable {
        case invalidJSON(offset: Int)
        case notAnObject
    }

    /// Members of the object spanning `range` of `bytes` (whitespace around it allowed).
    public static func members(of bytes: UnsafeRawBufferPointer, in range: Range<Int>) throws(Failure) -> [Member] {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        scanner.skipWhitespace()
        guard scanner.peek() == UInt8(ascii: "{") else { throw .notAnObject }
        var members: [Member] = []
        try scanner.scanObject { key, value in members.append(Member(key: key, value: value)) }
        scanner.skipWhitespace()
        guard scanner.position == scanner.end else { throw .invalidJSON(offset: scanner.position) }
        return members
    }

    /// The value range of the first member named `key` of the object spanning `range`, scanning
    /// no further than that member (keys compared as bytes; decoded only when escaped). Nil when
    /// `range` is not an object or has no such member.
    public static func member(named key: String, of bytes: UnsafeRawBufferPointer, in range: Range<Int>) -> Range<Int>? {
        var key = key  // `withUTF8` reads the name's own bytes: no array of them per lookup
        return key.withUTF8 { name in member(named: name, of: bytes, in: range) }
    }

    /// `member(named:of:in:)` for a name given as UTF-8 bytes.
    public static func member(named key: UnsafeBufferPointer<UInt8>, of bytes: UnsafeRawBufferPointer, in range: Range<Int>) -> Range<Int>? {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        scanner.skipWhitespace()
        return try? scanner.findMember(key)
    }

    /// Which of two member names the object spanning `range` has first among its own members:
    /// 0 for `first`, 1 for `second`, reading no further than that member's key (a JSON-RPC
    /// answer's `result` or `error` is told without scanning the result). Nil when it has neither,
    /// is not an object, or is invalid before the name is found.
    public static func firstMember(_ first: StaticString, or second: StaticString, of bytes: UnsafeRawBufferPointer, in range: Range<Int>) -> Int? {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        scanner.skipWhitespace()
        guard scanner.next() == UInt8(ascii: "{") else { return nil }
        let firstName = UnsafeRawBufferPointer(start: first.utf8Start, count: first.utf8CodeUnitCount)
        let secondName = UnsafeRawBufferPointer(start: second.utf8Start, count: second.utf8CodeUnitCount)
        /// Whether the key at `start..<end` of `bytes` (without its quotes) is `name`, as bytes.
        func isKey(_ name: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
            guard end &- start == name.count else { return false }
            var index = 0
            while index < name.count {
                guard bytes[start &+ index] == name[index] else { return false }
                index &+= 1
            }
            return true
        }
        do throws(Failure) {
            scanner.skipWhitespace()
            if scanner.peek() == UInt8(ascii: "}") { return nil }
            while true {
                scanner.skipWhitespace()
                let keyStart = scanner.position
                try scanner.skipString()
                let (start, end) = (keyStart &+ 1, scanner.position &- 1)
                if isKey(firstName, start, end) { return 0 }
                if isKey(secondName, start, end) { return 1 }
                // An escaped key (rare) is compared decoded, as `findMember` does.
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
                if raw.contains(UInt8(ascii: "\\")) {
                    let key = Array(Cursor.unescape(raw).utf8)
                    if key.elementsEqual(firstName) { return 0 }
                    if key.elementsEqual(secondName) { return 1 }
                }
                scanner.skipWhitespace()
                guard scanner.next() == UInt8(ascii: ":") else { return nil }
                scanner.skipWhitespace()
                try scanner.skipValue(depth: 0)
                scanner.skipWhitespace()
                guard scanner.next() == UInt8(ascii: ",") else { return nil }
            }
        } catch {
            return nil
        }
    }

    /// Checks that `range` holds exactly one valid JSON value.
    public static func validate(_ bytes: UnsafeRawBufferPointer, in range: Range<Int>) throws(Failure) {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        scanner.skipWhitespace()
        try scanner.skipValue()
        scanner.skipWhitespace()
        guard scanner.position == scanner.end else { throw .invalidJSON(offset: scanner.position) }
    }

    /// The first non-whitespace byte in `range`, if any.
    public static func firstSignificantByte(_ bytes: UnsafeRawBufferPointer, in range: Range<Int>) -> UInt8? {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        scanner.skipWhitespace()
        return scanner.peek()
    }

    /// Ranges of the elements of the array spanning `range`.
    public static func elements(of bytes: UnsafeRawBufferPointer, in range: Range<Int>) throws(Failure) -> [Range<Int>] {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        scanner.skipWhitespace()
        guard scanner.peek() == UInt8(ascii: "[") else { throw .invalidJSON(offset: scanner.position) }
        scanner.position += 1
        var elements: [Range<Int>] = []
        scanner.skipWhitespace()
        if scanner.peek() == UInt8(ascii: "]") {
            scanner.position += 1
        } else {
            while true {
                scanner.skipWhitespace()
                let start = scanner.position
                try scanner.skipValue()
                elements.append(start..<scanner.position)
                scanner.skipWhitespace()
                guard let next = scanner.next() else { throw .invalidJSON(offset: scanner.position) }
                if next == UInt8(ascii: "]") { break }
                guard next == UInt8(ascii: ",") else { throw .invalidJSON(offset: scanner.position - 1) }
            }
        }
        scanner.skipWhitespace()
        guard scanner.position == scanner.end else { throw .invalidJSON(offset: scanner.position) }
        return elements
    }

    /// Decodes a JSON string value (with escapes) at `range`; nil if it is not a string.
    public static func string(_ bytes: UnsafeRawBufferPointer, in range: Range<Int>) -> String? {
        var scanner = Cursor(bytes: bytes, position: range.lowerBound, end: range.upperBound)
        return try? scanner.scanString()
    }

    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var position: Int
        let end: Int

        func peek() -> UInt8? { position < end ? bytes[position] : nil }

        mutating func next() -> UInt8? {
            guard position < end else { return nil }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func skipWhitespace() {
            while position < end {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        mutating func scanObject(_ member: (String, Range<Int>) -> Void) throws(Failure) {
            try walkObject(depth: 0, decodeKeys: true, member: member)
        }

        /// Walks an object, reporting each key and value range; with `decodeKeys` false it only
        /// validates (keys are skipped, not decoded, and reported as "").
        private mutating func walkObject(depth: Int, decodeKeys: Bool, member: (String, Range<Int>) -> Void) throws(Failure) {
            guard next() == UInt8(ascii: "{") else { throw .invalidJSON(offset: position - 1) }
            skipWhitespace()
            if peek() == UInt8(ascii: "}") {
                position += 1
                return
            }
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw .invalidJSON(offset: position) }
                var key = ""
                if decodeKeys { key = try scanString() } else { try skipString() }
                skipWhitespace()
                guard next() == UInt8(ascii: ":") else { throw .invalidJSON(offset: position - 1) }
                skipWhitespace()
                let start = position
                try skipValue(depth: depth)
                member(key, start..<position)
                skipWhitespace()
                guard let separator = next() else { throw .invalidJSON(offset: position) }
                if separator == UInt8(ascii: "}") { return }
                guard separator == UInt8(ascii: ",") else { throw .invalidJSON(offset: position - 1) }
            }
        }

        mutating func findMember(_ key: UnsafeBufferPointer<UInt8>) throws(Failure) -> Range<Int>? {
            guard next() == UInt8(ascii: "{") else { throw .notAnObject }
            skipWhitespace()
            if peek() == UInt8(ascii: "}") { return nil }
            while true {
                skipWhitespace()
                let keyStart = position
                try skipString()
                let raw = UnsafeRawBufferPointer(rebasing: bytes[(keyStart + 1)..<(position - 1)])
                let matches = Self.hasEscape(raw) ? Array(Self.unescape(raw).utf8).elementsEqual(key) : Self.equal(raw, key)
                skipWhitespace()
                guard next() == UInt8(ascii: ":") else { throw .invalidJSON(offset: position - 1) }
                skipWhitespace()
                let start = position
                try skipValue(depth: 0)
                if matches { return start..<position }
                skipWhitespace()
                guard let separator = next() else { throw .invalidJSON(offset: position) }
                if separator == UInt8(ascii: "}") { return nil }
                guard separator == UInt8(ascii: ",") else { throw .invalidJSON(offset: position - 1) }
            }
        }

        mutating func skipValue(depth: Int = 0) throws(Failure) {
            guard depth < 512, let byte = peek() else { throw .invalidJSON(offset: position) }
            switch byte {
            case UInt8(ascii: "{"):
                try walkObject(depth: depth + 1, decodeKeys: false) { _, _ in }
            case UInt8(ascii: "["):
                position += 1
                skipWhitespace()
                if peek() == UInt8(ascii: "]") {
                    position += 1
                    return
                }
                while true {
                    skipWhitespace()
                    try skipValue(depth: depth + 1)
                    skipWhitespace()
                    guard let separator = next() else { throw .invalidJSON(offset: position) }
                    if separator == UInt8(ascii: "]") { return }
                    guard separator == UInt8(ascii: ",") else { throw .invalidJSON(offset: position - 1) }
                }
            case UInt8(ascii: "\""):
                try skipString()
            case UInt8(ascii: "t"):
                try expectLiteral("true")
            case UInt8(ascii: "f"):
                try expectLiteral("false")
            case UInt8(ascii: "n"):
                try expectLiteral("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try skipNumber()
            default:
                throw .invalidJSON(offset: position)
            }
        }

        private mutating func expectLiteral(_ literal: StaticString) throws(Failure) {
            let count = literal.utf8CodeUnitCount
            guard position + count <= end else { throw .invalidJSON(offset: position) }
            for index in 0..<count where bytes[position + index] != literal.utf8Start[index] {
                throw .invalidJSON(offset: position + index)
            }
            position += count
        }

        private mutating func skipNumber() throws(Failure) {
            let start = position
            if peek() == UInt8(ascii: "-") { position += 1 }
            guard let first = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw .invalidJSON(offset: position) }
            if first == UInt8(ascii: "0") {
                position += 1
            } else {
                skipDigits()
            }
            if peek() == UInt8(ascii: ".") {
                position += 1
                guard skipDigits() > 0 else { throw .invalidJSON(offset: position) }
            }
            if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
                position += 1
                if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
                guard skipDigits() > 0 else { throw .invalidJSON(offset: position) }
            }
            guard position > start else { throw .invalidJSON(offset: start) }
        }

        @discardableResult
        private mutating func skipDigits() -> Int {
            let start = position
            while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { position += 1 }
            return position - start
        }

        mutating func skipString() throws(Failure) {
            guard next() == UInt8(ascii: "\"") else { throw .invalidJSON(offset: position - 1) }
            while position < end {
                if position &+ 8 <= end, JSONBytes.isPlain(JSONBytes.word(bytes, at: position)) {
                    position &+= 8
                    continue
                }
                // Byte by byte through these eight: one of them ends the string, starts an
                // escape or is invalid.
                let stop = min(position &+ 8, end)
                while position < stop {
                    let byte = bytes[position]
                    position &+= 1
                    switch byte {
                    case UInt8(ascii: "\""): return
                    case UInt8(ascii: "\\"):
                        guard let escaped = next() else { throw .invalidJSON(offset: position) }
                        if escaped == UInt8(ascii: "u") {
                            guard position + 4 <= end else { throw .invalidJSON(offset: position) }
                            position += 4
                        }
                    case 0x00..<0x20:
                        throw .invalidJSON(offset: position - 1)
                    default:
                        continue
                    }
                }
            }
            throw .invalidJSON(offset: position)
        }

        mutating func scanString() throws(Failure) -> String {
            let start = position
            try skipString()
            let raw = UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<(position - 1)])
            if !Self.hasEscape(raw) {
                return String(decoding: raw, as: UTF8.self)
            }
            return Self.unescape(raw)
        }

        /// Whether a string's raw bytes hold a backslash (`memchr`: a key or value is looked at on
        /// every request, and the generic `contains` goes byte by byte through an iterator).
        static func hasEscape(_ raw: UnsafeRawBufferPointer) -> Bool {
            guard let base = raw.baseAddress, !raw.isEmpty else { return false }
            return memchr(base, Int32(UInt8(ascii: "\\")), raw.count) != nil
        }

        /// Whether a key's raw bytes are `name` (a length check and `memcmp`, not the generic
        /// `elementsEqual`).
        static func equal(_ raw: UnsafeRawBufferPointer, _ name: UnsafeBufferPointer<UInt8>) -> Bool {
            guard raw.count == name.count else { return false }
            guard let left = raw.baseAddress, let right = name.baseAddress, raw.count > 0 else { return true }
            return memcmp(left, right, raw.count) == 0
        }

        static func unescape(_ raw: UnsafeRawBufferPointer) -> String {
            var scalars = String.UnicodeScalarView()
            var utf8: [UInt8] = []
            var index = 0
            func flush() {
                if !utf8.isEmpty {
                    scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
                    utf8.removeAll()
                }
            }
            var pendingHigh: UInt32?
            while index < raw.count {
                let byte = raw[index]
                guard byte == UInt8(ascii: "\\"), index + 1 < raw.count else {
                    utf8.append(byte)
                    index += 1
                    continue
                }
                let escaped = raw[index + 1]
                index += 2
                switch escaped {
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "u"):
                    guard index + 4 <= raw.count,
                          let value = UInt32(String(decoding: UnsafeRawBufferPointer(rebasing: raw[index..<(index + 4)]), as: UTF8.self), radix: 16)
                    else { continue }
                    index += 4
                    flush()
                    if (0xD800...0xDBFF).contains(value) {
                        pendingHigh = value
                    } else if (0xDC00...0xDFFF).contains(value), let high = pendingHigh {
                        let combined = 0x10000 + ((high - 0xD800) << 10) + (value - 0xDC00)
                        if let scalar = Unicode.Scalar(combined) { scalars.append(scalar) }
                        pendingHigh = nil
                    } else if let scalar = Unicode.Scalar(value) {
                        scalars.append(scalar)
                    }
                default: utf8.append(escaped)
                }
            }
            flush()
            return String(scalars)
        }
    }
}
