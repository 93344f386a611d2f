/// Request paths as a fronting proxy reads them, so the gateway routes (and `/verify` decides) on
/// the same path the request will reach.
///
/// nginx, Traefik and Caddy decode percent-encoded unreserved characters, merge `//`, and resolve
/// `.`/`..` segments before they pick a location. A gateway that matched the raw text instead
/// could be told `/public/../private/mcp` (or `%2e%2e`) is public while the proxy serves the
/// private location. Normalizing the same way closes that gap; what normalization cannot make
/// unambiguous (an encoded slash, backslashes, `..` above the root, control characters) is refused.
public enum RequestPath {
    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        case notAbsolute
        case encodedSeparator
        case aboveRoot
        case invalidCharacter

        public var description: String {
            switch self {
            case .notAbsolute: "the path must start with /"
            case .encodedSeparator: "the path holds an encoded slash or backslash, which proxies read in different ways"
            case .aboveRoot: "the path's .. segments climb above the root"
            case .invalidCharacter: "the path holds a control character, a backslash or a malformed percent-encoding"
            }
        }
    }

    /// The normalized form of `raw` (a path without query): unreserved characters percent-decoded,
    /// other escapes kept (hex in upper case), repeated slashes merged, dot segments removed
    /// (RFC 3986 §5.2.4). A trailing slash is kept.
    public static func normalize(_ raw: String) throws(Refusal) -> String {
        // Asked on every request; nearly every path is already in normal form.
        if isNormal(raw) { return raw }
        return try normalizeFully(raw)
    }

    /// Whether `raw` is its own normal form: absolute, no escape, no character normalization
    /// refuses, no empty, `.` or `..` segment.
    package static func isNormal(_ raw: String) -> Bool {
        var started = false
        var segmentLength = 0
        var leadingDots = 0
        for byte in raw.utf8 {
            guard started else {
                guard byte == UInt8(ascii: "/") else { return false }
                started = true
                continue
            }
            if byte < 0x21 || byte == 0x7F || byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "%") { return false }
            if byte == UInt8(ascii: "/") {
                // `//`, `/./`, `/../`
                if segmentLength == 0 || (segmentLength == leadingDots && leadingDots <= 2) { return false }
                (segmentLength, leadingDots) = (0, 0)
            } else {
                if byte == UInt8(ascii: "."), leadingDots == segmentLength { leadingDots += 1 }
                segmentLength += 1
            }
        }
        // A last segment `.` or `..`.
        return started && !(segmentLength > 0 && segmentLength == leadingDots && leadingDots <= 2)
    }

    package static func normalizeFully(_ raw: String) throws(Refusal) -> String {
        let bytes = Array(raw.utf8)
        guard bytes.first == UInt8(ascii: "/") else { throw .notAbsolute }
        // 1. Percent-decoding of unreserved characters; refusal of what stays ambiguous.
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte < 0x21 || byte == 0x7F || byte == UInt8(ascii: "\\") { throw .invalidCharacter }
            guard byte == UInt8(ascii: "%") else {
                decoded.append(byte)
                index += 1
                continue
            }
            guard index + 2 < bytes.count, let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else {
                throw .invalidCharacter
            }
            let value = high << 4 | low
            switch value {
            case UInt8(ascii: "/"), UInt8(ascii: "\\"): throw .encodedSeparator
            case 0x00..<0x20, 0x7F: throw .invalidCharacter
            default: break
            }
            if isUnreserved(value) {
                decoded.append(value)
            } else {
                decoded.append(UInt8(ascii: "%"))
                decoded.append(upperHex(value >> 4))
                decoded.append(upperHex(value & 0x0F))
            }
            index += 3
        }
        // 2. Segments: empty ones (from `//`) and `.` dropped, `..` pops its parent.
        let endsWithSlash = decoded.last == UInt8(ascii: "/")
        var output: [ArraySlice<UInt8>] = []
        var trailingSlash = endsWithSlash
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if segment.elementsEqual([UInt8(ascii: ".")]) {
                trailingSlash = true
                continue
            }
            if segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                guard !output.isEmpty else { throw .aboveRoot }
                output.removeLast()
                trailingSlash = true
                continue
            }
            output.append(segment)
            trailingSlash = false
        }
        if endsWithSlash { trailingSlash = true }
        var result: [UInt8] = [UInt8(ascii: "/")]
        for (position, segment) in output.enumerated() {
            if position > 0 { result.append(UInt8(ascii: "/")) }
            result.append(contentsOf: segment)
        }
        if trailingSlash, !output.isEmpty { result.append(UInt8(ascii: "/")) }
        return String(decoding: result, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func upperHex(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "A") + nibble - 10
    }

    /// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"): true
        default: false
        }
    }
}
