import MCPMessages
import NIOCore
import Testing

/// Client messages are read one way only: anything two parsers could read differently is refused.
@Suite struct StrictJSONTests {
    func violation(_ text: String) -> StrictJSON.Violation? {
        do { try StrictJSON.validate(text) } catch { return error }
        return nil
    }

    func violation(bytes: [UInt8]) -> StrictJSON.Violation? {
        bytes.withUnsafeBytes { buffer in
            do throws(StrictJSON.Violation) { try StrictJSON.validate(buffer) } catch { return error }
            return nil
        }
    }

    @Test(arguments: [
        #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"é\u00e9\ud83d\ude00"}}}"#,
        #"[1, 2.5e-3, -0, true, false, null, "a\/b", {"a":{"a":{"a":1}}}]"#,
        #"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}"#,
        "  {\"emoji\":\"😀\"}\n",
    ])
    func acceptsOrdinaryJSON(_ text: String) {
        #expect(violation(text) == nil)
    }

    @Test func refusesDuplicateMembersAtAnyDepth() {
        #expect(violation(#"{"name":"echo","name":"environ"}"#) == .duplicateMember(name: "name", offset: 15))
        #expect(violation(#"{"params":{"name":"echo","arguments":{}},"params":{"name":"environ"}}"#) != nil)
        if case .duplicateMember(let name, _)? = violation(#"{"params":{"name":"echo","n\u0061me":"environ"}}"#) {
            #expect(name == "name")
        } else {
            Issue.record("an escaped duplicate name was accepted")
        }
        #expect(violation(#"[{"x":1},{"y":{"z":1,"z":2}}]"#) != nil)
        // Names are compared by value: raw against escaped either way round, non-ASCII too, and
        // a nested object's names neither hide nor collide with its parent's.
        #expect(violation(#"{"n\u0061me":1,"name":2}"#) == .duplicateMember(name: "name", offset: 15))
        #expect(violation(#"{"é":1,"\u00e9":2}"#) != nil)
        #expect(violation(#"{"ab":1,"a":2,"abc":3}"#) == nil)
        #expect(violation(#"{"a":{"b":1},"b":2,"c":{"a":1,"c":2}}"#) == nil)
        #expect(violation(#"{"a":{"b":1},"a":2}"#) != nil)
        // Many members: the hashed path finds duplicates too.
        let many = (0..<40).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        #expect(violation("{\(many)}") == nil)
        #expect(violation("{\(many),\"k7\":0}") != nil)
    }

    @Test func refusesInvalidEscapesAndLoneSurrogates() {
        #expect(violation(#"{"a":"\x41"}"#) == .invalidEscape(offset: 6))
        #expect(violation(#"{"a":"\u12G4"}"#) == .invalidEscape(offset: 6))
        #expect(violation(#"{"a":"\ud800"}"#) == .loneSurrogate(offset: 6))
        #expect(violation(#"{"a":"\udc00x"}"#) == .loneSurrogate(offset: 6))
        #expect(violation(#"{"a":"\ud800\u0041"}"#) == .loneSurrogate(offset: 6))
        // A lone surrogate as a key beside the real one.
        #expect(violation(#"{"name":"echo","\ud800name":"environ"}"#) != nil)
    }

    @Test func refusesInvalidUTF8() {
        let prefix = Array(#"{"a":""#.utf8), suffix = Array(#""}"#.utf8)
        for bad: [UInt8] in [[0xFF], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]] {
            #expect(violation(bytes: prefix + bad + suffix) == .invalidUTF8(offset: prefix.count), "\(bad)")
        }
        #expect(violation(bytes: prefix + [0xE2, 0x82, 0xAC] + suffix) == nil)
        // In a member name too.
        #expect(violation(bytes: Array(#"{""#.utf8) + [0xC0, 0xAF] + Array(#"":1}"#.utf8)) == .invalidUTF8(offset: 2))
    }

    @Test func refusesMalformedJSONAndExcessiveDepth() {
        for text in [#"{"a":1"#, #"{"a":1,}"#, #"{"a" 1}"#, "[1,]", "01", "\"\n\"", "{} {}"] {
            #expect(violation(text) != nil, "\(text)")
        }
        #expect(violation(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)) == .tooDeep(offset: StrictJSON.maxDepth))
    }

    @Test func batchesAreBounded() throws {
        let batch = "[" + (0...JSONRPCPayload.maxBatchSize).map { #"{"jsonrpc":"2.0","id":\#($0),"method":"ping"}"# }.joined(separator: ",") + "]"
        #expect(throws: JSONRPCMessage.ParseError.self) { try JSONRPCPayload(parsing: .init(string: batch)) }
        let fits = "[" + (1...JSONRPCPayload.maxBatchSize).map { #"{"jsonrpc":"2.0","id":\#($0),"method":"ping"}"# }.joined(separator: ",") + "]"
        guard case .batch(let messages) = try JSONRPCPayload(parsing: .init(string: fits)) else { Issue.record("not a batch"); return }
        #expect(messages.count == JSONRPCPayload.maxBatchSize)
    }
}
