import MCPMessages
import NIOCore
import Testing

@testable import GatewayServer

/// What the audit line and metrics read off an answer: bytes sent and a JSON-RPC error's code.
@Suite struct BodyTallyTests {
    private func summary(_ chunks: [String], contentType: String) -> (Int64, Int?) {
        let tally = BodyTally()
        for chunk in chunks { tally.add(ByteBuffer(string: chunk)) }
        return tally.summary(contentType: contentType)
    }

    @Test func anErrorAnswersCodeIsFoundInJSONAndInTheLastEvent() {
        let error = #"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#
        #expect(summary([error], contentType: "application/json").1 == -32602)
        #expect(summary([error], contentType: "Application/JSON; charset=utf-8").1 == -32602)
        let events = ["event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n", "event: message\ndata: \(error)\n\n"]
        let (bytes, code) = summary(events, contentType: "TEXT/event-stream")
        #expect(code == -32602)
        #expect(bytes == Int64(events.map(\.utf8.count).reduce(0, +)))
    }

    @Test func anErrorIsFoundWhereverItsMemberStandsAndResultsAreNotRead() {
        #expect(summary([#"{"error":{"code":7,"message":"x"},"id":1,"jsonrpc":"2.0"}"#], contentType: "application/json").1 == 7)
        #expect(summary([#" { "id" : "\"result\"" , "jsonrpc":"2.0", "error" : {"code":-1,"message":"x"}} "#], contentType: "application/json").1 == -1)
        // An escaped key is the key it decodes to.
        #expect(summary([#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"code":3,"message":"x"}}"#], contentType: "application/json").1 == 3)
        // A result that says "error" anywhere inside, or a body that is no JSON-RPC answer.
        #expect(summary([#"{"jsonrpc":"2.0","id":1,"result":{"error":{"code":1}}}"#], contentType: "application/json").1 == nil)
        #expect(summary([#"{"jsonrpc":"2.0","id":{"error":{"code":1}},"result":{}}"#], contentType: "application/json").1 == nil)
        #expect(summary([#"["error",{"error":{"code":1}}]"#], contentType: "application/json").1 == nil)
        #expect(summary([#"{"jsonrpc":"2.0","id":1,"error":{"code":1}"#], contentType: "application/json").1 == nil)
    }

    @Test func longAnswersAreToldFromTheirFirstMembers() {
        let text = String(repeating: "x", count: BodyTally.shortChunk)
        let error = #"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"\#(text)"}}"#
        #expect(summary([error], contentType: "application/json").1 == -32000)
        let result = #"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""error" \#(text)"}]}}"#
        #expect(summary([result], contentType: "application/json").1 == nil)
        #expect(summary(["event: message\ndata: \(error)\n\n"], contentType: "text/event-stream").1 == -32000)
    }

    @Test func aResultHasNoCodeEvenWhenItsTextMentionsAnError() {
        let result = #"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"\"error\": none"}]}}"#
        #expect(summary([result], contentType: "application/json").1 == nil)
        #expect(summary([#"{"jsonrpc":"2.0","id":1,"result":{}}"#], contentType: "application/json").1 == nil)
        #expect(summary([#"{"error":{"code":1}}"#], contentType: "text/plain").1 == nil)
    }

    @Test func mediaTypesCompareWithoutCaseAndAnErrorKeyIsFound() {
        #expect(MediaTypes.isEventStream("Text/Event-Stream; charset=utf-8"))
        #expect(!MediaTypes.isEventStream("text/event"))
        #expect(!MediaTypes.isEventStream("application/json") && !MediaTypes.isEventStream(nil))
        #expect(MediaTypes.isJSON("APPLICATION/json") && !MediaTypes.isJSON("text/plain"))
        #expect(BodyTally.mentionsError(ByteBuffer(string: #"x"error""#)))
        #expect(!BodyTally.mentionsError(ByteBuffer(string: #""erro"#)))
        #expect(!BodyTally.mentionsError(ByteBuffer()))
        #expect(BodyTally.mentionsError(ByteBuffer(string: #""error""#)))
        #expect(BodyTally.mentionsError(ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"error":{"code":-32601}}"#)))
        #expect(!BodyTally.mentionsError(ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"result":{"errors":0,"error ":1}}"#)))
        // Only the readable bytes count: a key in what was read already is not one.
        var consumed = ByteBuffer(string: #""error"{"result":{}}"#)
        consumed.moveReaderIndex(forwardBy: 7)
        #expect(!BodyTally.mentionsError(consumed))
        var partly = ByteBuffer(string: #"x"error"#)
        partly.writeString("\"")
        #expect(BodyTally.mentionsError(partly))
    }
}
