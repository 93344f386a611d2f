import GatewayUpstream
import HTTPTypes
import NIOCore
import NIOHTTP1
import Testing

/// The fast relay's own HTTP/1.1 on upstream connections: responses read whatever way the bytes
/// are split, every framing a server uses, and the answers that could make one response read as
/// two refused.
@Suite struct UpstreamHTTP1Tests {
    /// What the parser made of `text` fed in pieces of `split` bytes: a transcript of its events.
    private func events(_ text: String, split: Int = .max) throws(UpstreamResponseParser.Malformed) -> (events: [String], parser: UpstreamResponseParser) {
        var parser = UpstreamResponseParser()
        var seen: [String] = []
        var bytes = ByteBuffer(string: text)
        var body = ""
        while bytes.readableBytes > 0 {
            guard let piece = bytes.readSlice(length: min(split, bytes.readableBytes)) else { break }
            try parser.parse(piece) { event in
                switch event {
                case .head(let head):
                    seen.append("head \(head.status) \(head.reasonPhrase) keepAlive=\(head.keepAlive) " + head.fields.map { "\($0.name.canonicalName)=\($0.value)" }.joined(separator: ","))
                case .body(let part):
                    body += String(buffer: part)
                case .end:
                    if !body.isEmpty { seen.append("body \(body)") }
                    body = ""
                    seen.append("end")
                }
            }
        }
        if !body.isEmpty { seen.append("body \(body)") }
        return (seen, parser)
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func aLengthDelimitedAnswerReadsTheSameHoweverItIsSplit(split: Int) throws {
        let (seen, parser) = try events("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nMcp-Session-Id: s1\r\n\r\n{\"ok\":true}", split: split)
        #expect(seen == ["head 200 OK keepAlive=true content-type=application/json,content-length=11,mcp-session-id=s1", "body {\"ok\":true}", "end"])
        #expect(parser.reusable)
    }

    @Test(arguments: [1, 4, 1000])
    func aChunkedEventStreamIsReadChunkByChunkWithExtensionsAndTrailers(split: Int) throws {
        let text = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "8\r\ndata: 1\n\r\n" + "A;ext=1\r\ndata: 2\n\n\n\r\n" + "0\r\nX-Trailer: t\r\n\r\n"
        let (seen, parser) = try events(text, split: split)
        #expect(seen.first == "head 200 OK keepAlive=true content-type=text/event-stream")
        #expect(seen.dropFirst().first == "body data: 1\ndata: 2\n\n\n")
        #expect(seen.last == "end")
        #expect(parser.reusable)
    }

    @Test func aBodyWithoutLengthEndsWithTheConnectionWhichIsNotReused() throws {
        var (seen, parser) = try events("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}")
        #expect(seen == ["head 200 OK keepAlive=false content-type=application/json", "body {\"a\":1}"])
        let ended = parser.closed()
        #expect(ended)
        #expect(!parser.reusable)
        // Cut short: a length not reached is no end.
        (seen, parser) = try events("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        let endedEarly = parser.closed()
        #expect(!endedEarly)
        #expect(seen == ["head 200 OK keepAlive=true content-length=10", "body abc"])
    }

    @Test func interimAnswersAreSkippedAndNoBodyAnswersEndAtTheirHead() throws {
        let (seen, _) = try events("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        #expect(seen == ["head 202 Accepted keepAlive=true content-length=0", "end"])
        let (noContent, _) = try events("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(noContent == ["head 204 No Content keepAlive=true ", "end"])
    }

    @Test func keepAliveFollowsTheVersionAndConnection() throws {
        #expect(try events("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").parser.reusable == false)
        #expect(try events("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").parser.reusable == false)
        #expect(try events("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").parser.reusable == true)
        // Bare line feeds, a status line without a reason, and whitespace around values.
        let (seen, parser) = try events("HTTP/1.1 200\nContent-Length:  2 \n\nok")
        #expect(seen == ["head 200  keepAlive=true content-length=2", "body ok", "end"])
        #expect(parser.reusable)
    }

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", "not one length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n", "not one length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "not one length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "not one length"),
        ("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", "folded"),
        ("HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "not a field"),
        ("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "not a field"),
        ("HTTP/2 200 OK\r\n\r\n", "not HTTP/1.x"),
        ("ICY 200 OK\r\n\r\n", "not HTTP/1.x"),
        ("HTTP/1.1 2x0 OK\r\n\r\n", "three digits"),
        ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not hexadecimal"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", "too large"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "longer than its size"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", "after the end"),
    ])
    func answersThatCouldReadAsTwoAreRefused(text: String, reason: String) {
        #expect {
            _ = try events(text)
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test func aHeadThatNeverEndsIsRefusedAtItsLimit() {
        let endless = "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Pad: " + String(repeating: "a", count: 1000) + "\r\n", count: 70)
        #expect {
            _ = try events(endless, split: 4096)
        } throws: { error in
            "\(error)".contains("larger than")
        }
        let endlessChunkLine = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1" + String(repeating: " ", count: 9000)
        #expect {
            _ = try events(endlessChunkLine, split: 512)
        } throws: { error in
            "\(error)".contains("longer than")
        }
    }

    @Test func theParserStartsAfreshForTheNextResponse() throws {
        var parser = UpstreamResponseParser()
        var ends = 0
        for _ in 0..<3 {
            parser.reset()
            try parser.parse(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")) { if case .end = $0 { ends += 1 } }
            #expect(parser.reusable)
        }
        #expect(ends == 3)
    }

    // MARK: the request

    @Test func aRequestIsWrittenAsOneBufferWithItsBody() throws {
        var buffer = ByteBuffer()
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp?a=1", headers: ["Host": "up:8080", "Content-Type": "application/json", "Content-Length": "2"])
        try UpstreamRequestWriter.write(head, body: ByteBuffer(string: "{}"), into: &buffer)
        #expect(String(buffer: buffer) == "POST /mcp?a=1 HTTP/1.1\r\nHost: up:8080\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    }

    @Test(arguments: [
        (["X-Key": "a\r\nX-Injected: 1"], "/mcp"),
        (["X-Key": "a\nb"], "/mcp"),
        (["X-Key": "a\u{0}b"], "/mcp"),
        (["X Key": "a"], "/mcp"),
        (["X-Key\r\nX-Injected": "a"], "/mcp"),
        (["X-Key": "a"], "/mcp HTTP/1.1\r\nX-Injected: 1\r\n\r\nPOST /mcp"),
        (["X-Key": "a"], "/a b"),
        (["X-Key": "a"], ""),
    ])
    func nothingCanBeSmuggledIntoTheRequest(headers: [String: String], target: String) {
        var buffer = ByteBuffer()
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: target, headers: HTTPHeaders(headers.map { ($0.key, $0.value) }))
        #expect(throws: UpstreamRequestWriter.Refused.self) {
            try UpstreamRequestWriter.write(head, body: ByteBuffer(), into: &buffer)
        }
    }

    @Test func hopByHopFieldsAreNotKeptButTheLengthIs() throws {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
            + "Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nTrailer: X-T\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\nmcp-session-id: s\r\n\r\n{}"
        let (seen, _) = try events(text)
        #expect(seen.first == "head 200 OK keepAlive=true content-type=application/json,content-length=2,mcp-session-id=s")
        // The same names in another case are the same fields.
        let shouted = "HTTP/1.1 200 OK\r\nCONNECTION: X-HOP\r\nx-hop: 1\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n"
        #expect(try events(shouted).events.first == "head 200 OK keepAlive=true ")
    }

    /// One response on a fresh parser, and on `parser` (a connection's, after what it read
    /// before): each head, field by field with its spelling, and the framing, must be the same.
    private func expectSameOnConnection(_ text: String, _ parser: inout UpstreamResponseParser, sourceLocation: SourceLocation = #_sourceLocation) throws {
        func transcript(_ parser: inout UpstreamResponseParser) throws -> [String] {
            var seen: [String] = []
            try parser.parse(ByteBuffer(string: text)) { event in
                switch event {
                case .head(let head):
                    seen.append("head \(head.status) keepAlive=\(head.keepAlive) " + head.fields.map { "\($0.name.rawName)=\($0.value)" }.joined(separator: ","))
                case .body(let part): seen.append("body \(String(buffer: part))")
                case .end: seen.append("end")
                }
            }
            seen.append("reusable=\(parser.reusable)")
            return seen
        }
        var fresh = UpstreamResponseParser()
        let expected = try transcript(&fresh)
        parser.reset()
        #expect(try transcript(&parser) == expected, sourceLocation: sourceLocation)
    }

    @Test func aConnectionsResponsesEachReadAsOnAFreshParser() throws {
        // A head starts from the connection's last one while its names are the same, in order:
        // values that changed, names that did not, and heads of other shapes in between.
        let usual = ["Date: Sun, 06 Dec 2026 21:00:00 GMT", "Server: up", "Content-Type: application/json", "Content-Length: 2", "Mcp-Session-Id: s1"]
        func response(_ lines: [String], body: String = "{}") -> String {
            "HTTP/1.1 200 OK\r\n" + lines.map { $0 + "\r\n" }.joined() + "\r\n" + body
        }
        let responses = [
            response(usual),
            response(usual),
            // The date and the length change; then the session id, then nothing again.
            response(["Date: Sun, 06 Dec 2026 21:00:01 GMT"] + usual[1..<3] + ["Content-Length: 11"] + [usual[4]], body: "{\"ok\":true}"),
            response(["Date: Sun, 06 Dec 2026 21:00:01 GMT"] + usual[1..<3] + ["Content-Length: 11", "Mcp-Session-Id: s2"], body: "{\"ok\":true}"),
            response(["Date: Sun, 06 Dec 2026 21:00:01 GMT"] + usual[1..<3] + ["Content-Length: 11", "Mcp-Session-Id: s2"], body: "{\"ok\":true}"),
            // Hop-by-hop fields between kept ones, changing; the same names in another case.
            response([usual[0], "Connection: keep-alive", usual[2], "Keep-Alive: timeout=5", usual[3]]),
            response([usual[0], "Connection: keep-alive", usual[2], "Keep-Alive: timeout=9", "Content-Length: 3"], body: "{ }"),
            response(usual.map { $0.lowercased() }),
            // Fewer lines, more lines, another order, a repeated name, values with spaces.
            response(Array(usual.prefix(3)) + ["Content-Length: 2"]),
            response(usual + ["X-Extra: 1"]),
            response(usual.reversed()),
            response(usual + ["Set-Cookie: a=1", "Set-Cookie: b=2"]),
            response(usual + ["Set-Cookie: a=1", "Set-Cookie: b=3"]),
            response(usual + ["X-Padded:   spaced value  "]),
            // Names listed in Connection are dropped, and nothing is kept from that head.
            response(usual + ["Connection: X-Hop", "X-Hop: 1"]),
            response(usual + ["Connection: X-Hop", "X-Hop: 1"]),
            response(usual + ["Connection: X-Other", "X-Hop: 1"]),
            // Other framings and a no-body answer between ordinary ones.
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n" + usual.prefix(3).map { $0 + "\r\n" }.joined() + "\r\n",
            "HTTP/1.0 200 OK\r\n" + usual.map { $0 + "\r\n" }.joined() + "Connection: keep-alive\r\n\r\n{}",
            "HTTP/1.1 100 Continue\r\nServer: up\r\n\r\n" + response(usual),
            response([]),
            response(usual),
        ]
        var parser = UpstreamResponseParser()
        for text in responses {
            try expectSameOnConnection(text, &parser)
        }
    }
}
