@testable import GatewayServer
import GatewayConfig
import HTTPTypes
import Hummingbird
import MCPMessages
import NIOCore
import Testing

/// Small pieces of the operations features, without I/O: the https redirect's target and the
/// trace context stamped into a stdio child's request.
@Suite struct OperationsPiecesTests {
    static func request(_ target: String, authority: String) -> Request {
        Request(head: HTTPRequest(method: .get, scheme: "http", authority: authority, path: target), body: .init(buffer: ByteBuffer()))
    }

    @Test func theRedirectKeepsPathAndQueryAndNeverLeavesForAnotherHost() throws {
        let target = EntryPoint(name: "websecure", host: "0.0.0.0", port: 8443, allowedOrigins: [])
        let plain = PublicURL(scheme: "http", host: "gw.example", port: 8080)
        let secure = PublicURL(scheme: "https", host: "mcp.example.com", port: nil)
        #expect(HTTPSRedirect.location(for: Self.request("/time/mcp?a=1", authority: "gw.example:8080"), target: target, publicURL: plain) == "https://gw.example:8443/time/mcp?a=1")
        // With an https public URL, its origin: the Host header does not choose.
        #expect(HTTPSRedirect.location(for: Self.request("/x", authority: "evil.example"), target: target, publicURL: secure) == "https://mcp.example.com/x")
        // A scheme-relative path stays a path.
        #expect(HTTPSRedirect.location(for: Self.request("//evil.example/x", authority: "gw.example"), target: target, publicURL: secure) == "https://mcp.example.com/evil.example/x")
        // A Host that is not a host name gets no redirect at all.
        #expect(HTTPSRedirect.location(for: Self.request("/x", authority: "a\"b"), target: target, publicURL: plain) == nil)
    }

    @Test func aStdioRequestCarriesTheTraceInItsMetaAndOtherMessagesAreLeftAlone() throws {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let request = MCPCall(protocolVersion: "2025-06-18", sessionID: "s", body: ByteBuffer(string: #"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":1}}}"#))
        let stamped = EraDispatch.stamped(request, traceparent: traceparent)
        let meta = try #require(stamped.message?.value(at: ["params", "_meta", "traceparent"]))
        #expect(meta.contains(traceparent))
        #expect(stamped.message?.value(at: ["params", "_meta", "progressToken"]) == "1")
        #expect(stamped.sessionID == "s" && stamped.rawID == "3")
        let notification = MCPCall(protocolVersion: nil, sessionID: nil, body: ByteBuffer(string: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#))
        #expect(EraDispatch.stamped(notification, traceparent: traceparent) === notification)
    }
}
