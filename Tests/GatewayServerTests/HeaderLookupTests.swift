import HTTPTypes
import MCPTransport
import Testing

/// `HTTPFields.value(of:)` and `lists(_:token:)`, read on every request instead of the subscript:
/// they must say what the subscript (and a case-insensitive token split) says, duplicates
/// included, so that no check reads a header differently from the rest of the pipeline.
@Suite struct HeaderLookupTests {
    @Test func valueOfSaysWhatTheSubscriptSays() {
        let session = MCPHeaders.sessionID
        let cases: [HTTPFields] = [
            [:],
            [session: "abc"],
            [.contentType: "application/json", session: "abc", .accept: "*/*"],
            // Duplicates are joined as the subscript joins them, so a request with two session
            // ids names no session rather than the first one.
            [session: "abc", .accept: "*/*", session: "def"],
            [HTTPField.Name("mcp-session-id")!: "lower"],
            [.cookie: "a=1", .cookie: "b=2"],
            [session: ""],
        ]
        for fields in cases {
            #expect(fields.value(of: session) == fields[session])
            #expect(fields.value(of: .cookie) == fields[.cookie])
            #expect(fields.value(of: .origin) == fields[.origin])
        }
        let twice: HTTPFields = [session: "abc", session: "def"]
        #expect(twice.value(of: session) == "abc, def")
    }

    @Test func listsFindsATokenWithoutCaseOrSpaces() {
        func lists(_ values: [String], _ token: String) -> Bool {
            var fields = HTTPFields()
            for value in values { fields.append(HTTPField(name: .connection, value: value)) }
            return fields.lists(.connection, token: token)
        }
        #expect(lists(["close"], "close"))
        #expect(lists(["Close"], "close"))
        #expect(lists(["keep-alive, Upgrade"], "upgrade"))
        #expect(lists(["keep-alive,upgrade"], "upgrade"))
        #expect(lists([" UPGRADE ,keep-alive"], "upgrade"))
        #expect(lists(["keep-alive", "close"], "close"))
        #expect(lists(["keep-alive,\tclose\t"], "close"))
        #expect(!lists([], "close"))
        #expect(!lists(["keep-alive"], "close"))
        #expect(!lists(["closed"], "close"))
        #expect(!lists(["clo se"], "close"))
        #expect(!lists(["close x"], "close"))
        #expect(!lists(["xclose"], "close"))
        #expect(!lists(["upgrade-insecure"], "upgrade"))
        #expect(!lists([""], "close"))
        let upgrade: HTTPFields = [HTTPField.Name("Upgrade")!: "close"]
        #expect(!upgrade.lists(.connection, token: "close"))
    }
}
