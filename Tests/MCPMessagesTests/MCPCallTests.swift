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
