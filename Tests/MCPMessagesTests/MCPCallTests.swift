import MCPMessages
import NIOCore
import Testing

@Suite struct MCPCallTests {
    @Test func theEraFollowsTheVersionHeader() {
        #expect(MCPCall(protocolVersion: nil, sessionID: nil, body: nil).era == .sessionBased)
        #expect(MCPCall(protocolVersion: "2025-06-18", sessionID: "s", body: nil).era == .sessionBased)
        #expect(MCPCall(protocolVersion: "2026-07-28", sessionID: nil, body: nil).era == .modern)
        // An unknown version is not a session-based one: the modern rules refuse it precisely.
        #expect(MCPCall(protocolVersion: "1999-01-01", sessionID: nil, body: nil).era == .modern)
    }

    @Test func aSingleCallIsNamedOnce() {
        let call = MCPCall(protocolVersion: "2026-07-28", sessionID: nil, body: ByteBuffer(string: #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_time","arguments":{}}}"#))
        #expect(call.method == "tools/call")
        #expect(call.rawID == "7")
        #expect(call.target == "get_time")
        let read = MCPCall(protocolVersion: nil, sessionID: "s", body: ByteBuffer(string: #"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#))
        #expect(read.target == "file:///x")
        #expect(read.sessionID == "s")
    }

    @Test func theTargetIsTheParamsMemberAsTheBodySpellsIt() {
        func target(_ body: String) -> String? {
            MCPCall(protocolVersion: "2026-07-28", sessionID: nil, body: ByteBuffer(string: body)).target
        }
        // A key written with an escape is the same key; a nested or top-level `name` is not it.
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"inner"},"n\u0061me":"outer"}}"#) == "outer")
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","name":"top","params":{"arguments":{"name":"inner"}}}"#) == nil)
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9"}}"#) == "café")
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["name"]}"#) == nil)
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#) == nil)
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#) == nil)
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#) == "greet")
        #expect(target(#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}"#) == nil)
    }

    /// The fast path's one-pass reading gives the same call as the strict check followed by the
    /// parse, and refuses exactly what the strict check refuses.
    @Test(arguments: [
        #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_time","arguments":{"a":[1,{"b":null}]}}}"#,
        #"  {"method":"tools/call", "jsonrpc" : "2.0" ,"id":"x-1","params":{"n\u0061me":"caf\u00e9"}}  "#,
        #"{"jsonrpc":"2.0","id":1,"me\u0074hod":"resources/read","params":{"uri":"file:///x"}}"#,
        #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        #"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"a","result":{}}"#,
        #"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        #"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
        #"{}"#,
        #"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
        #"[]"#,
        #""text""#,
        #"7"#,
        // Refused by the strict reading: both ways give nothing.
        #"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call"}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"name":"a","name":"b"}}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"p\x"}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"\ud800"}"#,
        #"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#,
        #"{"jsonrpc":"2.0","id":1,"method":"ping""#,
        "",
    ])
    func theOnePassReadingIsTheCheckThenTheParse(_ text: String) {
        let body = ByteBuffer(string: text)
        let strict = (try? StrictJSON.validate(text)) != nil
        let expected = MCPCall(protocolVersion: "2025-06-18", sessionID: "s", body: body)
        guard let read = MCPCall.strictlyRead(protocolVersion: "2025-06-18", sessionID: "s", body: body) else {
            #expect(!strict, "refused, though the strict check accepts it")
            return
        }
        #expect(strict, "read, though the strict check refuses it")
        #expect(read.method == expected.method)
        #expect(read.rawID == expected.rawID)
        #expect(read.target == expected.target)
        #expect(read.era == expected.era)
        #expect(read.sessionID == "s")
        switch (read.parsed, expected.parsed) {
        case (.success(.single(let one))?, .success(.single(let other))?):
            #expect(one.kind == other.kind)
            #expect(one.paramsValue() == other.paramsValue())
            #expect(one.value(at: ["params", "arguments"]) == other.value(at: ["params", "arguments"]))
        case (.success(.batch(let one))?, .success(.batch(let other))?):
            #expect(one.map(\.method) == other.map(\.method))
        case (.failure(let one)?, .failure(let other)?):
            #expect(one == other)
        default:
            Issue.record("the two readings differ: \(String(describing: read.parsed)) against \(String(describing: expected.parsed))")
        }
    }

    @Test func batchesAndNonsenseAreKeptApart() {
        let batch = MCPCall(protocolVersion: "2025-03-26", sessionID: "s", body: ByteBuffer(string: #"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#))
        guard case .batch(let messages) = batch.payload else {
            Issue.record("not a batch")
            return
        }
        #expect(messages.count == 2)
        #expect(batch.method == nil && batch.target == nil)
        let notJSON = MCPCall(protocolVersion: nil, sessionID: nil, body: ByteBuffer(string: "{"))
        #expect(notJSON.payload == nil)
        if case .failure(.invalidJSON) = notJSON.parsed {} else { Issue.record("expected invalidJSON, got \(String(describing: notJSON.parsed))") }
        let get = MCPCall(protocolVersion: nil, sessionID: "s", body: nil)
        #expect(get.parsed == nil)
    }
}
