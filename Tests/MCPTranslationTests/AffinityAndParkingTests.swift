import Foundation
import MCPMessages
import MCPTranslation
import GatewayStore
import NIOCore
import Testing

@Suite struct RequestStateAffinityTests {
    static let answer = ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{},"requestState":"child-state"}}"#)

    @Test func aTagIsHonouredForItsCallerOnly() throws {
        let tagged = RequestStateAffinity.tagging(Self.answer, sessionID: "child-1", requester: "alpha\u{0}alice")
        let state = try #require(try JSONRPCMessage(parsing: tagged).string(at: ["result", "requestState"]))
        // Routed to this process, then the child's tag.
        let routing = try #require(RequestStateRouting.split(state))
        #expect(routing.instance == ProcessInstance.id && routing.handle.hasPrefix(RequestStateAffinity.prefix))
        let parsed = try #require(RequestStateAffinity.parse(state, requester: "alpha\u{0}alice"))
        #expect(parsed.sessionID == "child-1" && parsed.original == "child-state")
        // Another caller, another router, an altered child or state: not honoured.
        #expect(RequestStateAffinity.parse(state, requester: "alpha\u{0}mallory") == nil)
        #expect(RequestStateAffinity.parse(state, requester: "beta\u{0}alice") == nil)
        #expect(RequestStateAffinity.parse(state.replacingOccurrences(of: "child-1", with: "child-2"), requester: "alpha\u{0}alice") == nil)
        #expect(RequestStateAffinity.parse(state + "x", requester: "alpha\u{0}alice") == nil)
        #expect(RequestStateAffinity.parse("mcpgw~child-1~0000000000000000~child-state", requester: "alpha\u{0}alice") == nil)
        // Another instance's tag (the same handle routed elsewhere) is not this process's to honour.
        #expect(RequestStateAffinity.parse(RequestStateRouting.tag(routing.handle, instance: "another"), requester: "alpha\u{0}alice") == nil)
        // The handle alone (unrouted) still parses: routing is only where to send it.
        #expect(RequestStateAffinity.parse(routing.handle, requester: "alpha\u{0}alice")?.original == "child-state")
    }

    @Test func routedStatesNameTheirInstance() {
        #expect(RequestStateRouting.split("mcpgw@abc~handle~with~tildes")! == ("abc", "handle~with~tildes"))
        #expect(RequestStateRouting.split("mcpgw@~x") == nil && RequestStateRouting.split("mcpgw@abc") == nil && RequestStateRouting.split("plain") == nil)
        #expect(RequestStateRouting.local(RequestStateRouting.tag("h")) == "h")
        #expect(RequestStateRouting.local("mcpgw@other~h") == "mcpgw@other~h")
    }

    @Test func theRetryCarriesTheChildsOwnState() throws {
        let retry = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","requestState":"mcpgw~c~m~s"}}"#)
        #expect(RequestStateAffinity.restoring(retry, state: "child-state")?.string(at: ["params", "requestState"]) == "child-state")
        #expect(RequestStateAffinity.restoring(retry, state: "")?.string(at: ["params", "requestState"]) == nil)
    }
}

@Suite struct ParkedRequestsTests {
    @Test func aParkedValueIsTakenOnceByItsOwner() {
        let parked = ParkedRequests<Int>()
        let token = parked.park(42, owner: "alice")
        #expect(parked.take(token: token, owner: "mallory") == nil)
        #expect(parked.take(token: token, owner: "alice") == 42)
        #expect(parked.take(token: token, owner: "alice") == nil)
        #expect(parked.take(token: "made-up", owner: "alice") == nil)
    }
}

@Suite struct EraRewriteTests {
    @Test func modernMetaIsRemovedAndOtherMetaKept() throws {
        let message = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":7}}}"#)
        let rewritten = try #require(EraRewrite.withoutModernMeta(message))
        #expect(rewritten.value(at: ["params", "_meta", "progressToken"]) == "7")
        #expect(rewritten.value(at: ["params", "_meta", "io.modelcontextprotocol/protocolVersion"]) == nil)
    }

    @Test func sessionBasedRequestsAreStampedWithoutOverwriting() throws {
        let initialize = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"elicitation":{}},"clientInfo":{"name":"c","version":"1"}}}"#)
        let stamp = ModernProtocol.clientStamp(from: initialize)
        #expect(EraRewrite.declares(stamp: stamp, anyOf: ["elicitation"]))
        #expect(!EraRewrite.declares(stamp: stamp, anyOf: ["sampling"]))
        let request = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":{"progressToken":1}}}"#)
        let stamped = EraRewrite.stamping(request, meta: stamp)
        #expect(stamped.string(at: ["params", "_meta", "io.modelcontextprotocol/protocolVersion"]) == "2026-07-28")
        #expect(stamped.value(at: ["params", "_meta", "progressToken"]) == "1")
        // Notifications are not stamped.
        let notification = try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#)
        #expect(EraRewrite.stamping(notification, meta: stamp).value(at: ["params", "_meta"]) == nil)
    }

    @Test func resultsAreSpelledForTheModernEra() throws {
        let list = EraRewrite.completeResult(for: "tools/list")(ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#), true)
        let message = try JSONRPCMessage(parsing: list)
        #expect(message.string(at: ["result", "resultType"]) == "complete")
        #expect(message.value(at: ["result", "ttlMs"]) == "0")
        #expect(message.string(at: ["result", "cacheScope"]) == "private")
        let call = EraRewrite.completeResult(for: "tools/call")(ByteBuffer(string: #"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#), true)
        #expect(try JSONRPCMessage(parsing: call).value(at: ["result", "ttlMs"]) == nil)
        // Interim messages pass untouched.
        let progress = ByteBuffer(string: #"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#)
        #expect(EraRewrite.completeResult(for: "tools/call")(progress, false) == progress)
    }

    @Test func anInputRequiredResultIsRefusedForAClientThatCannotAnswer() throws {
        let ask = ByteBuffer(string: #"{"jsonrpc":"2.0","id":9,"result":{"resultType":"input_required","inputRequests":{"a":{"method":"roots/list","params":{}}}}}"#)
        #expect(EraRewrite.isInputRequired(ask))
        let refused = try JSONRPCMessage(parsing: EraRewrite.refusingInputRequired(ask))
        #expect(refused.rawID == "9")
        #expect(refused.string(at: ["error", "message"])?.contains("roots/list") == true)
        let plain = ByteBuffer(string: #"{"jsonrpc":"2.0","id":9,"result":{"text":"input_required is just a word here"}}"#)
        #expect(!EraRewrite.isInputRequired(plain))
        #expect(EraRewrite.refusingInputRequired(plain) == plain)
    }
}
