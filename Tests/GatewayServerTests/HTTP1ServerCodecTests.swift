import HTTPTypes
import NIOHTTP1
import NIOHTTPTypesHTTP1
import Testing

@testable import GatewayServer

/// `RequestHeadConverter` takes the place of NIOHTTPTypesHTTP1's conversion on every request: it
/// must make exactly the request the library makes (every field, in order, in the spelling sent),
/// whatever a client sends and whatever it sent before on the connection, so that no check
/// downstream reads a head differently.
@Suite struct HTTP1ServerCodecTests {
    private static func head(_ uri: String, method: HTTPMethod = .POST, _ fields: [(String, String)]) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(fields))
    }

    private static func head(_ fields: [(String, String)]) -> HTTPRequestHead {
        head("/mcp", fields)
    }

    /// Each head as a connection's first, and as the next after the same head with other values
    /// (the fields then start from the earlier request's).
    private static func expectSame(_ head: HTTPRequestHead, sourceLocation: SourceLocation = #_sourceLocation) throws {
        var first = RequestHeadConverter()
        try expectSame(head, from: &first, sourceLocation: sourceLocation)
        var next = RequestHeadConverter()
        var earlier = head
        earlier.headers = HTTPHeaders(head.headers.enumerated().map { ($0.element.name, "earlier \($0.offset)") })
        _ = try? next.request(earlier)
        try expectSame(head, from: &next, sourceLocation: sourceLocation)
        try expectSame(head, from: &next, sourceLocation: sourceLocation)
    }

    private static func expectSame(_ head: HTTPRequestHead, from converter: inout RequestHeadConverter, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let library = try HTTPRequest(head, secure: false, splitCookie: false)
        let ours = try converter.request(head)
        #expect(ours == library, sourceLocation: sourceLocation)
        #expect(ours.method == library.method && ours.scheme == library.scheme, sourceLocation: sourceLocation)
        #expect(ours.authority == library.authority && ours.path == library.path, sourceLocation: sourceLocation)
        // `==` on fields compares values per name; the order and the spelling matter too.
        let spelled = { (request: HTTPRequest) in request.headerFields.map { "\($0.name.rawName)=\($0.value)" } }
        #expect(spelled(ours) == spelled(library), sourceLocation: sourceLocation)
        #expect(ours.headerFields.map(\.name.canonicalName) == library.headerFields.map(\.name.canonicalName), sourceLocation: sourceLocation)
    }

    @Test func aClientsUsualRequestIsTheLibrarysRequest() throws {
        // wrk's, the Python SDK's (lower case) and a browser-like spelling.
        try Self.expectSame(Self.head([
            ("Host", "127.0.0.1:8080"), ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "echo"), ("Content-Length", "97"),
            ("Authorization", "Bearer abc"),
        ]))
        try Self.expectSame(Self.head([
            ("host", "gw.example"), ("accept", "*/*"), ("accept-encoding", "gzip, deflate"), ("connection", "keep-alive"),
            ("user-agent", "python-httpx/0.28.1"), ("mcp-protocol-version", "2025-06-18"), ("mcp-session-id", "s-1"),
            ("content-type", "application/json"), ("content-length", "12"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ]))
        try Self.expectSame(Self.head("/mcp?x=1", method: .GET, [("Host", "h"), ("Last-Event-ID", "7"), ("Origin", "https://claude.ai")]))
    }

    @Test func repeatedFieldsStayRepeatedInOrder() throws {
        // Two tokens, two session ids, two forwarded-for lists: a check that reads one of them
        // must read what the library would have handed it.
        try Self.expectSame(Self.head([
            ("Host", "h"), ("Authorization", "Bearer first"), ("Accept", "*/*"), ("authorization", "Bearer second"),
            ("Mcp-Session-Id", "a"), ("mcp-session-id", "b"), ("X-Forwarded-For", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8"),
        ]))
        try Self.expectSame(Self.head([("Cookie", "a=1; b=2"), ("Host", "h"), ("cookie", "c=3")]))
    }

    @Test func onlyTheFirstHostIsTheAuthority() throws {
        try Self.expectSame(Self.head([("Accept", "*/*"), ("HOST", "first"), ("host", "second"), ("Host", "third")]))
        try Self.expectSame(Self.head([("hOsT", "mixed")]))
        try Self.expectSame(Self.head([("Accept", "*/*")]))
        // Names that only look like it.
        try Self.expectSame(Self.head([("Hosts", "x"), ("X-Host", "y"), ("Host", "z")]))
        var converter = RequestHeadConverter()
        let request = try converter.request(Self.head([("HOST", "first"), ("host", "second")]))
        #expect(request.authority == "first" && request.headerFields.map(\.value) == ["second"])
    }

    @Test func namesThatAreNotTokensAreLeftOutAsTheLibraryLeavesThemOut() throws {
        try Self.expectSame(Self.head([("Host", "h"), ("Bad Name", "x"), ("Good", "y"), ("", "z"), ("a(b", "w"), ("Content-Type", "text/plain")]))
    }

    @Test func valuesAreLegalizedAsTheLibraryLegalizesThem() throws {
        try Self.expectSame(Self.head([("Host", "h"), ("X-Odd", " padded\t"), ("User-Agent", "caf\u{e9}"), ("Accept", "a\u{0}b")]))
    }

    @Test func targetsThatAreNotAPathGoTheLibrarysWay() throws {
        try Self.expectSame(Self.head("http://gw.example/mcp?x=1", [("Host", "gw.example")]))
        try Self.expectSame(Self.head("*", method: .OPTIONS, [("Host", "h")]))
        try Self.expectSame(Self.head("//double/slash", [("Host", "h")]))
        try Self.expectSame(Self.head("/a/../b/%2e%2e/%2F", [("Host", "h")]))
        try Self.expectSame(Self.head("/", method: .RAW(value: "PURGE"), [("Host", "h")]))
    }

    @Test func aMethodTheLibraryRefusesIsRefused() {
        let head = Self.head("/mcp", method: .RAW(value: "BAD METHOD"), [("Host", "h")])
        #expect(throws: (any Error).self) { try HTTPRequest(head, secure: false, splitCookie: false) }
        var converter = RequestHeadConverter()
        #expect(throws: (any Error).self) { try converter.request(head) }
    }

    @Test func everyKnownNameInEitherSpellingIsTheLibrarysName() throws {
        let names = [
            "Accept", "accept", "Accept-Encoding", "accept-encoding", "Authorization", "authorization", "Connection", "connection",
            "Content-Length", "content-length", "Content-Type", "content-type", "Last-Event-ID", "last-event-id",
            "MCP-Protocol-Version", "Mcp-Protocol-Version", "mcp-protocol-version", "Mcp-Session-Id", "mcp-session-id", "Mcp-Method",
            "mcp-method", "Mcp-Name", "mcp-name", "Origin", "origin", "traceparent", "tracestate", "User-Agent", "user-agent",
            "X-Forwarded-For", "x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-proto", "X-Forwarded-Host", "x-forwarded-host",
            // Spellings not in the table, of names that are.
            "ACCEPT", "Content-type", "mcp-Session-id",
        ]
        try Self.expectSame(Self.head([("Host", "h")] + names.enumerated().map { ($0.element, "v\($0.offset)") }))
    }

    @Test func aConnectionsRequestsEachAreTheLibrarysWhateverCameBefore() throws {
        let usual = [
            ("Host", "gw:1"), ("Content-Type", "application/json"), ("Authorization", "Bearer a"), ("Mcp-Name", "echo"), ("Content-Length", "97"),
        ]
        func with(_ fields: [(String, String)], _ changes: [String: String]) -> [(String, String)] {
            fields.map { ($0.0, changes[$0.0] ?? $0.1) }
        }
        let heads: [HTTPRequestHead] = [
            Self.head(usual),
            // The same names: new values, then the same again, then another authority.
            Self.head(with(usual, ["Content-Length": "12", "Mcp-Name": "other", "Authorization": "Bearer b"])),
            Self.head(with(usual, ["Content-Length": "12", "Mcp-Name": "other", "Authorization": "Bearer b"])),
            Self.head(with(usual, ["Host": "elsewhere"])),
            // Another order, one more field, one fewer.
            Self.head([usual[1], usual[0]] + usual[2...]),
            Self.head(usual + [("Mcp-Session-Id", "s")]),
            Self.head(Array(usual.dropLast())),
            // A token presented twice, the second one changing; a name that is not a token.
            Self.head(usual + [("authorization", "Bearer c"), ("Bad Name", "x")]),
            Self.head(usual + [("authorization", "Bearer d"), ("Bad Name", "y")]),
            // A second Host is a field; it changes, then the first one does.
            Self.head(usual + [("host", "second")]),
            Self.head(usual + [("host", "third")]),
            Self.head(with(usual, ["Host": "first-changed"]) + [("host", "third")]),
            // The same names in another case are other names.
            Self.head(usual.map { ($0.0.lowercased(), $0.1) }),
            Self.head([("Host", "h"), ("Cookie", "a=1; b=2"), ("cookie", "c=3")]),
            Self.head([("Host", "h"), ("Cookie", "a=9"), ("cookie", "c=3")]),
            // A target that is not a path between two that are.
            Self.head("http://gw/mcp", usual),
            Self.head(usual),
            Self.head([]),
            Self.head(usual),
        ]
        var converter = RequestHeadConverter()
        for head in heads {
            try Self.expectSame(head, from: &converter)
        }
    }
}
