import MCPMessages
import NIOCore
import Testing

@Suite struct JSONRPCMessageTests {
    @Test func classifiesRequestsNotificationsAndResponses() throws {
        let request = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#)
        #expect(request.kind == .request)
        #expect(request.method == "tools/call")
        #expect(request.rawID == "7")
        let notification = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        #expect(notification.kind == .notification)
        #expect(notification.rawID == nil)
        let response = try JSONRPCMessage(parsing: #" { "id" : "abc" , "result" : {"x":[1,2,{"y":null}]}, "jsonrpc":"2.0" } "#)
        #expect(response.kind == .response)
        #expect(response.rawID == "\"abc\"")
        let error = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#)
        #expect(error.kind == .errorResponse)
    }

    @Test(arguments: [
        "", "{", "{\"jsonrpc\":\"2.0\",}", "[1,2", "{\"a\":tru}", "nul", "{\"a\":\"\u{01}\"}", "{\"a\":01}", "{\"a\":1.}",
    ])
    func rejectsInvalidJSON(text: String) {
        #expect(throws: JSONRPCMessage.ParseError.invalidJSON) { try JSONRPCMessage(parsing: text) }
    }

    @Test(arguments: [
        #"[]"#,
        #"{"id":1,"method":"x"}"#,
        #"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        #"{"jsonrpc":"2.0","id":1}"#,
        #"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
        #"{"jsonrpc":"2.0","method":5}"#,
        #"{"jsonrpc":"2.0","result":1}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"x","result":1}"#,
        #"42"#,
    ])
    func rejectsInvalidMessages(text: String) {
        do {
            _ = try JSONRPCMessage(parsing: text)
            Issue.record("accepted \(text)")
        } catch {
            if case .invalidMessage = error {} else if text == "[]" || text == "42" {} else {
                Issue.record("\(text): \(error)")
            }
        }
    }

    @Test func replacesTheIDAndNothingElse() throws {
        let original = #"{"jsonrpc":"2.0","id":"client-1","method":"ping","params":{"id":"inner"}}"#
        let message = try JSONRPCMessage(parsing: original)
        let replaced = message.replacingID(with: "42")
        #expect(String(buffer: replaced) == #"{"jsonrpc":"2.0","id":42,"method":"ping","params":{"id":"inner"}}"#)
        let back = try JSONRPCMessage(parsing: replaced).replacingID(with: message.rawID ?? "")
        #expect(String(buffer: back) == original)
    }

    @Test func replacesOneValueAndKeepsEveryOtherByte() throws {
        let message = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name" : "a__x","arguments":{"name":"inner"}}}"#)
        let renamed = try #require(message.replacingValue(at: ["params", "name"], withRawJSON: #""x""#))
        #expect(renamed.text == #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name" : "x","arguments":{"name":"inner"}}}"#)
        #expect(message.replacingValue(at: ["params", "missing"], withRawJSON: "1") == nil)
    }

    @Test func readsNestedParams() throws {
        let message = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"p\"1"},"protocolVersion":"2025-11-25"}}"#)
        #expect(message.paramsValue("_meta", "progressToken") == #""p\"1""#)
        #expect(message.paramsString("protocolVersion") == "2025-11-25")
        #expect(message.paramsValue("missing") == nil)
    }

    @Test func decodesEscapedStrings() throws {
        let message = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","method":"a\u00e9\n\ud83d\ude00b"}"#)
        #expect(message.method == "aé\n😀b")
    }

    @Test func keepsLineSeparatorsInsideStrings() throws {
        // U+2028 is valid raw inside a JSON string; framing splits on "\n" only.
        let message = try JSONRPCMessage(parsing: "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"text\":\"a\u{2028}b\"}}")
        #expect(message.kind == .response)
    }

    @Test func parsesBatches() throws {
        let payload = try JSONRPCPayload(parsing: ByteBuffer(string: #"[{"jsonrpc":"2.0","id":1,"method":"a"}, {"jsonrpc":"2.0","method":"b"}]"#))
        guard case .batch(let messages) = payload else {
            Issue.record("not a batch")
            return
        }
        #expect(messages.map(\.method) == ["a", "b"])
        #expect(messages[0].rawID == "1")
        #expect(throws: JSONRPCMessage.ParseError.self) { try JSONRPCPayload(parsing: ByteBuffer(string: "[]")) }
    }

    @Test func largeMessagesScanQuickly() throws {
        let payload = String(repeating: "x", count: 10 * 1024 * 1024)
        let message = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":3,"result":{"text":""# + payload + "\"}}")
        #expect(message.kind == .response)
        #expect(message.replacingID(with: "9").readableBytes == message.bytes.readableBytes)
    }

    @Test func errorResponsesAreValidJSONRPC() throws {
        let buffer = JSONRPCErrorResponse.make(rawID: "\"a\"", code: -32603, message: "child \"x\" exited\n", dataJSON: #"{"exitStatus":1}"#)
        let message = try JSONRPCMessage(parsing: buffer)
        #expect(message.kind == .errorResponse)
        #expect(message.rawID == "\"a\"")
    }
}

@Suite struct SplicingTests {
    @Test func modernMetaIsSplicedOutWhereverItStands() throws {
        let cases = [
            (#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"io.x/a":1},"name":"n"}}"#, #"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"n"}}"#),
            (#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"n", "_meta" : {"io.x/a":1} }}"#, #"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"n" }}"#),
            (#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"io.x/a":{"b":[1,2]}}}}"#, #"{"jsonrpc":"2.0","id":1,"method":"m","params":{}}"#),
            (#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"_meta":{},"b":2}}"#, #"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"b":2}}"#),
        ]
        for (input, expected) in cases {
            let message = try JSONRPCMessage(parsing: input)
            let spliced = try #require(message.removingParamsMeta(ifOnlyKeysWithPrefix: "io.x/"))
            #expect(spliced.text == expected)
        }
        // Other keys in _meta (a progress token): not spliced; the caller rewrites.
        let mixed = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"io.x/a":1,"progressToken":7}}}"#)
        #expect(mixed.removingParamsMeta(ifOnlyKeysWithPrefix: "io.x/") == nil)
        let plain = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"m"}"#)
        #expect(plain.removingParamsMeta(ifOnlyKeysWithPrefix: "io.x/")?.text == plain.text)
    }

    @Test func membersAreInsertedIntoTheResult() throws {
        let full = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":"a","result":{"tools":[]}}"#)
        #expect(full.insertingIntoResult(#""resultType":"complete""#).map { String(buffer: $0) } == #"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","tools":[]}}"#)
        let empty = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"result":{ }}"#)
        #expect(empty.insertingIntoResult(#""x":1"#).map { String(buffer: $0) } == #"{"jsonrpc":"2.0","id":1,"result":{"x":1 }}"#)
        #expect(full.resultHasMember("tools") && !full.resultHasMember("resultType"))
        let error = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#)
        #expect(error.insertingIntoResult(#""x":1"#) == nil)
    }
}

/// Looking one member up stops at it, and finds what reading every member would find.
@Suite struct JSONMemberLookupTests {
    @Test func aLookupFindsTheFirstMemberAsTheFullReadingDoes() throws {
        let objects = [
            #"{"name":"echo","arguments":{"a":1}}"#,
            #"{ "arguments" : {"name":"inner"} , "name" : "outer" }"#,
            #"{"na\u006de":"escaped key","other":[1,2,{"name":3}]}"#,
            #"{"name":"first","name":"second"}"#,
            #"{"nam":"prefix","names":"longer"}"#,
            #"{}"#,
            #"{"uri":"file:///x","name":null}"#,
        ]
        for object in objects {
            let bytes = Array(object.utf8)
            bytes.withUnsafeBytes { buffer in
                let all = try? JSONScanner.members(of: buffer, in: 0..<buffer.count)
                for key in ["name", "uri", "arguments", "missing"] {
                    let expected = all?.first(where: { $0.key == key })?.value
                    #expect(JSONScanner.member(named: key, of: buffer, in: 0..<buffer.count) == expected, "\(key) in \(object)")
                }
            }
        }
        let array = Array("[1,2]".utf8)
        array.withUnsafeBytes { #expect(JSONScanner.member(named: "name", of: $0, in: 0..<$0.count) == nil) }
        let message = try JSONRPCMessage(parsing: ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"no"},"name":"get_time"}}"#))
        #expect(message.string(at: ["params", "name"]) == "get_time")
        #expect(message.string(at: ["params", "arguments", "name"]) == "no")
        #expect(message.string(at: ["params", "missing"]) == nil)
    }

    /// Lookups under `params` start where the parse found it: they must read what a walk from
    /// the top reads, whatever stands before or after `params`, and when there are two `params`
    /// (which only a body that skipped the strict check can have), all of them read the first.
    @Test func lookupsUnderParamsReadWhatAWalkFromTheTopReads() throws {
        let bodies = [
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_time","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            #"{"params":{"name":"first in the body"},"jsonrpc":"2.0","id":"x","method":"tools/call"}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"escaped key"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"first"},"params":{"name":"second","requestState":"s"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,2]}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ]
        for body in bodies {
            let message = try JSONRPCMessage(parsing: body)
            let bytes = Array(body.utf8)
            bytes.withUnsafeBytes { buffer in
                func walk(_ path: [String]) -> String? {
                    var range = 0..<buffer.count
                    for key in path {
                        guard let found = JSONScanner.member(named: key, of: buffer, in: range) else { return nil }
                        range = found
                    }
                    return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[range]), as: UTF8.self)
                }
                for path in [["params"], ["params", "name"], ["params", "requestState"], ["params", "_meta", "io.modelcontextprotocol/protocolVersion"], ["method"]] {
                    #expect(message.value(at: path) == walk(path), "\(path) in \(body)")
                }
                #expect(message.paramString("name") == message.string(at: ["params", "name"]), "\(body)")
            }
        }
        let twice = try JSONRPCMessage(parsing: bodies[3])
        #expect(twice.paramString("name") == "first")
        #expect(twice.value(at: ["params", "requestState"]) == nil)
    }
}
