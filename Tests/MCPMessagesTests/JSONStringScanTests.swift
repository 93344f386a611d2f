import Foundation
import Testing

@testable import MCPMessages

/// The string scanners skip eight plain bytes at a time: every byte that matters must still be
/// seen, wherever it falls in a word, and a string must end where it ends.
@Suite struct JSONStringScanTests {
    static func isSpecial(_ byte: UInt8) -> Bool { byte == 0x22 || byte == 0x5C || byte < 0x20 }

    @Test func aWordIsPlainExactlyWhenNoneOfItsBytesMatters() {
        let values: [UInt8] = [0x00, 0x01, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7F, 0x80, 0x9F, 0xC3, 0xFF]
        for first in 0..<8 {
            for second in 0..<8 {
                for a in values {
                    for b in values {
                        var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 8)
                        bytes[first] = a
                        bytes[second] = b
                        let word = bytes.withUnsafeBytes { JSONBytes.word($0, at: 0) }
                        let special = bytes.contains(where: Self.isSpecial)
                        #expect(JSONBytes.isPlain(word) == !special, "\(bytes)")
                        #expect(JSONBytes.isPlainASCII(word) == (!special && bytes.allSatisfy { $0 < 0x80 }), "\(bytes)")
                    }
                }
            }
        }
    }

    @Test(arguments: [
        (#"\""#, "\""), (#"\\"#, "\\"), (#"\n"#, "\n"), (#"\u00e9"#, "é"), (#"\ud83d\ude00"#, "😀"), ("é", "é"), ("€", "€"), ("x", "x"),
    ])
    func escapesAndMultibyteCharactersAnywhereDecodeAsThemselves(raw: String, decoded: String) throws {
        for length in 0..<24 {
            for index in 0...length {
                let plain = String(repeating: "m", count: length)
                let cut = plain.index(plain.startIndex, offsetBy: index)
                let json = #"{"jsonrpc":"2.0","id":1,"method":""# + plain[..<cut] + raw + plain[cut...] + #"","params":{"k":"v"}}"#
                try StrictJSON.validate(json)
                let message = try JSONRPCMessage(parsing: json)
                #expect(message.method == String(plain[..<cut]) + decoded + String(plain[cut...]), "\(json)")
                #expect(message.paramString("k") == "v", "\(json)")
            }
        }
    }

    @Test func aControlCharacterOrAnUnendedStringIsRefusedWhereverItIs() throws {
        for length in 1..<24 {
            for index in 0..<length {
                var bytes = Array(#"{"jsonrpc":"2.0","id":1,"method":""#.utf8) + [UInt8](repeating: UInt8(ascii: "m"), count: length) + Array(#""}"#.utf8)
                let start = bytes.count - 2 - length
                bytes[start + index] = 0x0A
                #expect(throws: (any Error).self) { try bytes.withUnsafeBytes { try StrictJSON.validate($0) } }
                #expect(throws: JSONRPCMessage.ParseError.invalidJSON) { try JSONRPCMessage(parsing: String(decoding: bytes, as: UTF8.self)) }
            }
            let unended = #"{"jsonrpc":"2.0","id":1,"method":""# + String(repeating: "m", count: length)
            #expect(throws: (any Error).self) { try StrictJSON.validate(unended) }
            #expect(throws: JSONRPCMessage.ParseError.invalidJSON) { try JSONRPCMessage(parsing: unended) }
        }
    }

    @Test func invalidUTF8IsRefusedByTheStrictCheckWhereverItIs() {
        for length in 1..<24 {
            for index in 0..<length {
                var bytes = Array(#"{"a":""#.utf8) + [UInt8](repeating: UInt8(ascii: "m"), count: length) + Array(#""}"#.utf8)
                bytes[6 + index] = 0xFF
                #expect(throws: (any Error).self) { try bytes.withUnsafeBytes { try StrictJSON.validate($0) } }
            }
        }
    }
}

/// `JSONScanner.firstMember(_:or:of:in:)`: which of two names an object has first, read no
/// further than that key.
@Suite struct FirstMemberTests {
    private func first(_ json: String) -> Int? {
        var json = json
        return json.withUTF8 { bytes in JSONScanner.firstMember("error", or: "result", of: UnsafeRawBufferPointer(bytes), in: 0..<bytes.count) }
    }

    @Test func theFirstOfTheTwoAmongTheObjectsOwnMembers() {
        #expect(first(#"{"jsonrpc":"2.0","id":1,"result":{}}"#) == 1)
        #expect(first(#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#) == 0)
        #expect(first(#" {"error":1,"result":2}"#) == 0)
        #expect(first(#"{"result":1,"error":2}"#) == 1)
        // Nested names and names inside strings are not members of this object.
        #expect(first(#"{"id":{"error":1},"x":"\"error\"","result":{}}"#) == 1)
        #expect(first(#"{"\u0065rror":1}"#) == 0)
        #expect(first(#"{"errors":1,"resulting":2}"#) == nil)
    }

    @Test func whatItCannotReadIsNeither() {
        #expect(first("") == nil)
        #expect(first("[]") == nil)
        #expect(first("{}") == nil)
        #expect(first(#"{"id":1"#) == nil)
        #expect(first(#"{"id":tru,"error":1}"#) == nil)
        #expect(first(#"{"id" 1,"error":1}"#) == nil)
        #expect(first(#"{"id":1 "error":1}"#) == nil)
        // What comes after the name found is not read: the answer's own parse judges it.
        #expect(first(#"{"result":"#) == 1)
    }
}

