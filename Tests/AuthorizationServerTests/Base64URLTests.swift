import Foundation
import Testing

@testable import AuthorizationServer

/// `Base64URL` reads every token's parts: it must say exactly what the Foundation-string version
/// it replaced said, for every encoding and for anything else a client could send.
@Suite struct Base64URLTests {
    /// The replaced implementation, kept as the reference.
    private enum Reference {
        static func encode(_ bytes: [UInt8]) -> String {
            Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }

        static func decode(_ text: String) -> [UInt8]? {
            guard text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }), text.allSatisfy(\.isASCII) else { return nil }
            var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            let remainder = base64.count % 4
            if remainder == 1 { return nil }
            if remainder > 0 { base64 += String(repeating: "=", count: 4 - remainder) }
            return Data(base64Encoded: base64).map(Array.init)
        }
    }

    @Test func everyLengthOfBytesEncodesAndDecodesAsBefore() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...96 {
            for _ in 0..<20 {
                let bytes = (0..<length).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
                let encoded = Base64URL.encode(bytes)
                #expect(encoded == Reference.encode(bytes))
                #expect(Base64URL.decode(encoded) == bytes)
                #expect(Base64URL.decode(Substring(encoded)) == bytes)
            }
        }
        // Every value of the 6 bits at each place of a 3-byte group.
        for value in 0..<256 {
            let bytes = [UInt8(value), UInt8(255 - value), UInt8(value ^ 0x5A)]
            #expect(Base64URL.encode(bytes) == Reference.encode(bytes))
        }
    }

    @Test func anythingElseIsReadAsBefore() {
        // The alphabet, the standard alphabet's other two, padding, whitespace, controls,
        // non-ASCII letters and digits, and a combining mark.
        let pieces = ["A", "z", "0", "9", "-", "_", "+", "/", "=", " ", "\n", "\r\n", "\0", "é", "e\u{301}", "٣", "Ａ", ".", "%"]
        // Every string of up to three pieces.
        var strings: [String] = [""]
        for _ in 0..<3 {
            strings += strings.flatMap { prefix in pieces.map { prefix + $0 } }
        }
        for text in Set(strings) {
            #expect(Base64URL.decode(text) == Reference.decode(text), "\(text.debugDescription)")
        }
        // Longer random ones, mostly of the alphabet (non-canonical last characters included).
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_").map(String.init)
        for _ in 0..<5_000 {
            let length = Int.random(in: 0...24, using: &generator)
            var text = (0..<length).map { _ in alphabet.randomElement(using: &generator) ?? "A" }.joined()
            if Int.random(in: 0..<4, using: &generator) == 0, let odd = pieces.randomElement(using: &generator) {
                let place = text.index(text.startIndex, offsetBy: Int.random(in: 0...length, using: &generator))
                text.insert(contentsOf: odd, at: place)
            }
            #expect(Base64URL.decode(text) == Reference.decode(text), "\(text.debugDescription)")
        }
    }
}
