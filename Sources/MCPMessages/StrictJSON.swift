#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The strict reading every client message gets before the gateway looks at it or passes it on.
///
/// JSON parsers disagree on what to do with a duplicated member name (first wins, last wins,
/// error), an invalid escape or a lone surrogate. When the gateway checks one reading of a body
/// (`Mcp-Name` against `params.name`) and a server acts on another, the check means nothing. So a
/// client message with any of these is refused outright: then every parser downstream sees the same
/// message the gateway checked.
public enum StrictJSON {
    public enum Violation: Error, Equatable, Sendable, CustomStringConvertible {
        case invalidJSON(offset: Int)
        case duplicateMember(name: String, offset: Int)
        case invalidEscape(offset: Int)
        case loneSurrogate(offset: Int)
        case invalidUTF8(offset: Int)
        case tooDeep(offset: Int)

        public var description: String {
            switch self {
            case .invalidJSON(let offset): "not valid JSON (at byte \(offset))"
            case .duplicateMember(let name, let offset): "member \"\(Self.printable(name))\" appears twice in one object (at byte \(offset))"
            case .invalidEscape(let offset): "invalid escape sequence in a string (at byte \(offset))"
            case .loneSurrogate(let offset): "a \\u escape holds a lone UTF-16 surrogate (at byte \(offset))"
            case .invalidUTF8(let offset): "invalid UTF-8 (at byte \(offset))"
            case .tooDeep(let offset): "nested more than \(StrictJSON.maxDepth) levels deep (at byte \(offset))"
            }
        }

        /// Names are echoed in error messages: keep them short and printable.
        private static func printable(_ name: String) -> String {
            let visible = name.unicodeScalars.map { $0.value < 0x20 || $0 == "\"" || $0 == "\\" ? "?" : String($0) }.joined()
            return visible.count > 64 ? String(visible.prefix(64)) + "…" : visible
        }
    }

    public static let maxDepth = 512

    /// Checks that `bytes` hold exactly one JSON value with no duplicate member names (compared
    /// after unescaping), only valid escapes, paired surrogates and valid UTF-8.
    public static func validate(_ bytes: UnsafeRawBufferPointer) throws(Violation) {
        var reader = Reader(bytes: bytes)
        try reader.document()
    }

    /// `validate`, also handing back the members of the top-level object as
    /// `JSONScanner.members` would find them (keys decoded, value ranges without the whitespace
    /// around them), from the same pass; nil when the value is not an object. A message read
    /// this way is not scanned a second time for its envelope.
    public static func validateTopLevelMembers(_ bytes: UnsafeRawBufferPointer) throws(Violation) -> [JSONScanner.Member]? {
        var reader = Reader(bytes: bytes)
        // A JSON-RPC message has a handful of members: room for them at once, not regrown.
        var members: [JSONScanner.Member] = []
        members.reserveCapacity(8)
        reader.topLevel = members
        let isObject = try reader.document()
        return isObject ? reader.topLevel : nil
    }

    public static func validate(_ text: String) throws(Violation) {
        var copy = text
        let violation: Violation? = copy.withUTF8 { buffer in
            do throws(Violation) { try validate(UnsafeRawBufferPointer(buffer)) } catch { return error }
            return nil
        }
        if let violation { throw violation }
    }

    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var position = 0
        /// The member names of the objects being read, innermost object's last: each object
        /// looks for a duplicate among its own, then drops them. One array for the whole body.
        var memberNames: [MemberName] = []
        /// Non-nil: the top-level object's members are gathered here (`validateTopLevelMembers`).
        var topLevel: [JSONScanner.Member]?

        /// A member name: where it is in the body when it has no escape (its bytes are then its
        /// value), else its value decoded. Most names are compared without being copied.
        struct MemberName {
            var start: Int
            var end: Int
            var decoded: [UInt8]?
        }

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

        /// The whole body: one value with nothing but whitespace around it. True when it is an
        /// object.
        @discardableResult
        mutating func document() throws(Violation) -> Bool {
            skipWhitespace()
            let isObject = peek() == UInt8(ascii: "{")
            try value(depth: 0)
            skipWhitespace()
            guard position == bytes.count else { throw .invalidJSON(offset: position) }
            return isObject
        }

        mutating func skipWhitespace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        mutating func expect(_ byte: UInt8) throws(Violation) {
            guard peek() == byte else { throw .invalidJSON(offset: position) }
            position += 1
        }

        mutating func value(depth: Int) throws(Violation) {
            guard depth < StrictJSON.maxDepth else { throw .tooDeep(offset: position) }
            guard let byte = peek() else { throw .invalidJSON(offset: position) }
            switch byte {
            case UInt8(ascii: "{"): try object(depth: depth + 1)
            case UInt8(ascii: "["): try array(depth: depth + 1)
            case UInt8(ascii: "\""): _ = try string(decode: false)
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            default: throw .invalidJSON(offset: position)
            }
        }

        mutating func object(depth: Int) throws(Violation) {
            try expect(UInt8(ascii: "{"))
            skipWhitespace()
            if peek() == UInt8(ascii: "}") {
                position += 1
                return
            }
            // Most objects have a handful of members: a linear search beats hashing there.
            let base = memberNames.count
            defer { memberNames.removeSubrange(base...) }
            var nameSet: Set<[UInt8]>?
            while true {
                skipWhitespace()
                let start = position
                guard peek() == UInt8(ascii: "\"") else { throw .invalidJSON(offset: position) }
                let name = try memberName()
                if var set = nameSet {
                    let value = self.value(of: name)
                    guard set.insert(value).inserted else { throw .duplicateMember(name: String(decoding: value, as: UTF8.self), offset: start) }
                    nameSet = set
                } else {
                    for index in base..<memberNames.count where same(memberNames[index], name) {
                        throw .duplicateMember(name: String(decoding: self.value(of: name), as: UTF8.self), offset: start)
                    }
                    memberNames.append(name)
                    if memberNames.count - base > 16 { nameSet = Set(memberNames[base...].map { self.value(of: $0) }) }
                }
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
                let valueStart = position
                try value(depth: depth)
                // The top-level object is read at depth 1 (`value(depth: 0)` opens it).
                if depth == 1, topLevel != nil {
                    let member = JSONScanner.Member(key: key(of: name), value: valueStart..<position)
                    topLevel?.append(member)
                }
                skipWhitespace()
                guard let separator = peek() else { throw .invalidJSON(offset: position) }
                position += 1
                if separator == UInt8(ascii: "}") { return }
                guard separator == UInt8(ascii: ",") else { throw .invalidJSON(offset: position - 1) }
            }
        }

        /// Reads a member name: its place when it holds no escape, else its decoded value.
        mutating func memberName() throws(Violation) -> MemberName {
            let start = position
            try expect(UInt8(ascii: "\""))
            while position < bytes.count {
                let byte = bytes[position]
                switch byte {
                case UInt8(ascii: "\""):
                    position += 1
                    return MemberName(start: start + 1, end: position - 1, decoded: nil)
                case UInt8(ascii: "\\"):
                    // An escape: read the name again, decoding it.
                    position = start
                    guard let decoded = try string(decode: true) else { throw .invalidJSON(offset: start) }
                    return MemberName(start: start, end: position, decoded: decoded)
                case 0x00..<0x20:
                    throw .invalidJSON(offset: position)
                case 0x20..<0x80:
                    position += 1
                default:
                    position += try utf8Sequence(at: position)
                }
            }
            throw .invalidJSON(offset: position)
        }

        /// A member name's value as a string (valid UTF-8: the reading checked it).
        func key(of name: MemberName) -> String {
            if let decoded = name.decoded { return String(decoding: decoded, as: UTF8.self) }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[name.start..<name.end]), as: UTF8.self)
        }

        /// A member name's value as bytes.
        func value(of name: MemberName) -> [UInt8] {
            name.decoded ?? Array(bytes[name.start..<name.end])
        }

        /// Whether two member names have the same value (compared after unescaping).
        func same(_ first: MemberName, _ second: MemberName) -> Bool {
            guard first.decoded == nil, second.decoded == nil else { return value(of: first) == value(of: second) }
            let count = first.end - first.start
            guard count == second.end - second.start else { return false }
            guard count > 0, let base = bytes.baseAddress else { return true }
            return memcmp(base + first.start, base + second.start, count) == 0
        }

        mutating func array(depth: Int) throws(Violation) {
            try expect(UInt8(ascii: "["))
            skipWhitespace()
            if peek() == UInt8(ascii: "]") {
                position += 1
                return
            }
            while true {
                skipWhitespace()
                try value(depth: depth)
                skipWhitespace()
                guard let separator = peek() else { throw .invalidJSON(offset: position) }
                position += 1
                if separator == UInt8(ascii: "]") { return }
                guard separator == UInt8(ascii: ",") else { throw .invalidJSON(offset: position - 1) }
            }
        }

        mutating func literal(_ text: StaticString) throws(Violation) {
            let count = text.utf8CodeUnitCount
            guard position + count <= bytes.count else { throw .invalidJSON(offset: position) }
            for index in 0..<count where bytes[position + index] != text.utf8Start[index] {
                throw .invalidJSON(offset: position + index)
            }
            position += count
        }

        mutating func number() throws(Violation) {
            if peek() == UInt8(ascii: "-") { position += 1 }
            guard let first = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw .invalidJSON(offset: position) }
            if first == UInt8(ascii: "0") { position += 1 } else { digits() }
            if peek() == UInt8(ascii: ".") {
                position += 1
                guard digits() > 0 else { throw .invalidJSON(offset: position) }
            }
            if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
                position += 1
                if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
                guard digits() > 0 else { throw .invalidJSON(offset: position) }
            }
        }

        @discardableResult
        mutating func digits() -> Int {
            let start = position
            while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { position += 1 }
            return position - start
        }

        /// Reads a string; with `decode`, returns its value as UTF-8 bytes (escapes resolved).
        mutating func string(decode: Bool) throws(Violation) -> [UInt8]? {
            try expect(UInt8(ascii: "\""))
            var decoded: [UInt8] = []
            // Until there, bytes are looked at one by one (a word there had one to look at).
            var byteByByteUntil = 0
            while position < bytes.count {
                if position >= byteByByteUntil {
                    if position &+ 8 <= bytes.count, JSONBytes.isPlainASCII(JSONBytes.word(bytes, at: position)) {
                        if decode { decoded.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[position..<(position &+ 8)])) }
                        position &+= 8
                        continue
                    }
                    byteByByteUntil = position &+ 8
                }
                let byte = bytes[position]
                switch byte {
                case UInt8(ascii: "\""):
                    position += 1
                    return decode ? decoded : nil
                case UInt8(ascii: "\\"):
                    let escapeStart = position
                    position += 1
                    guard let escaped = peek() else { throw .invalidEscape(offset: escapeStart) }
                    position += 1
                    let simple: UInt8?
                    switch escaped {
                    case UInt8(ascii: "\""): simple = 0x22
                    case UInt8(ascii: "\\"): simple = 0x5C
                    case UInt8(ascii: "/"): simple = 0x2F
                    case UInt8(ascii: "b"): simple = 0x08
                    case UInt8(ascii: "f"): simple = 0x0C
                    case UInt8(ascii: "n"): simple = 0x0A
                    case UInt8(ascii: "r"): simple = 0x0D
                    case UInt8(ascii: "t"): simple = 0x09
                    case UInt8(ascii: "u"): simple = nil
                    default: throw .invalidEscape(offset: escapeStart)
                    }
                    if let simple {
                        if decode { decoded.append(simple) }
                        continue
                    }
                    var scalar = try hex4(escapeStart: escapeStart)
                    if (0xDC00...0xDFFF).contains(scalar) { throw .loneSurrogate(offset: escapeStart) }
                    if (0xD800...0xDBFF).contains(scalar) {
                        // Must be followed at once by an escaped low surrogate.
                        guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                            throw .loneSurrogate(offset: escapeStart)
                        }
                        position += 2
                        let low = try hex4(escapeStart: position - 2)
                        guard (0xDC00...0xDFFF).contains(low) else { throw .loneSurrogate(offset: escapeStart) }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    if decode, let unicode = Unicode.Scalar(scalar) { decoded.append(contentsOf: Array(String(unicode).utf8)) }
                case 0x00..<0x20:
                    throw .invalidJSON(offset: position)
                case 0x20..<0x80:
                    if decode { decoded.append(byte) }
                    position += 1
                default:
                    let length = try utf8Sequence(at: position)
                    if decode { decoded.append(contentsOf: bytes[position..<(position + length)]) }
                    position += length
                }
            }
            throw .invalidJSON(offset: position)
        }

        mutating func hex4(escapeStart: Int) throws(Violation) -> UInt32 {
            guard position + 4 <= bytes.count else { throw .invalidEscape(offset: escapeStart) }
            var value: UInt32 = 0
            for offset in 0..<4 {
                let byte = bytes[position + offset]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw .invalidEscape(offset: escapeStart)
                }
                value = value << 4 | UInt32(digit)
            }
            position += 4
            return value
        }

        /// The length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates,
        /// nothing above U+10FFFF) of a non-ASCII character at `start`.
        func utf8Sequence(at start: Int) throws(Violation) -> Int {
            let lead = bytes[start]
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: throw .invalidUTF8(offset: start)
            }
            guard start + length <= bytes.count else { throw .invalidUTF8(offset: start) }
            let second = bytes[start + 1]
            guard second >= lower, second <= upper else { throw .invalidUTF8(offset: start) }
            for index in 2..<max(2, length) where !(0x80...0xBF).contains(bytes[start + index]) {
                throw .invalidUTF8(offset: start)
            }
            return length
        }
    }
}
