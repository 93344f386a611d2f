import GatewayRouting
import Testing

/// Paths are read as nginx reads them; what cannot be read one way only is refused.
@Suite struct RequestPathTests {
    @Test(arguments: [
        ("/time/mcp", "/time/mcp"),
        ("/pub/../alpha/mcp", "/alpha/mcp"),
        ("/pub/%2e%2e/alpha/mcp", "/alpha/mcp"),
        ("/pub/%2E%2E/alpha/mcp", "/alpha/mcp"),
        ("/pub/./alpha/mcp", "/pub/alpha/mcp"),
        ("//alpha//mcp", "/alpha/mcp"),
        ("/alpha/mcp/../../alpha/mcp", "/alpha/mcp"),
        ("/alpha/mcp/", "/alpha/mcp/"),
        ("/alpha/mcp/.", "/alpha/mcp/"),
        ("/alpha/mcp/x/..", "/alpha/mcp/"),
        ("/%61lpha/mcp", "/alpha/mcp"),
        ("/a%3bb", "/a%3Bb"),
        ("/", "/"),
    ])
    func normalizes(_ raw: String, _ expected: String) throws {
        #expect(try RequestPath.normalize(raw) == expected)
    }

    @Test func refusesWhatProxiesReadDifferently() {
        #expect(throws: RequestPath.Refusal.encodedSeparator) { try RequestPath.normalize("/pub..%2Falpha/mcp") }
        #expect(throws: RequestPath.Refusal.encodedSeparator) { try RequestPath.normalize("/pub/..%2f..%2falpha/mcp") }
        #expect(throws: RequestPath.Refusal.encodedSeparator) { try RequestPath.normalize("/pub%5C..%5Calpha/mcp") }
        #expect(throws: RequestPath.Refusal.invalidCharacter) { try RequestPath.normalize("/pub\\..\\alpha/mcp") }
        #expect(throws: RequestPath.Refusal.aboveRoot) { try RequestPath.normalize("/../alpha/mcp") }
        #expect(throws: RequestPath.Refusal.aboveRoot) { try RequestPath.normalize("/a/%2e%2e/%2e%2e/alpha") }
        #expect(throws: RequestPath.Refusal.invalidCharacter) { try RequestPath.normalize("/alpha/mcp%00") }
        #expect(throws: RequestPath.Refusal.invalidCharacter) { try RequestPath.normalize("/alpha/mcp%zz") }
        #expect(throws: RequestPath.Refusal.notAbsolute) { try RequestPath.normalize("alpha/mcp") }
    }

    /// The shortcut for paths already in normal form agrees with the full normalization: a path
    /// it takes is its own normal form, and every path it declines is one the full form changes
    /// or refuses.
    @Test func theShortcutTakesExactlyThePathsTheFullFormKeeps() {
        let paths = [
            "/", "/time/mcp", "/alpha/mcp/", "/a/b/c", "/.well-known/oauth-protected-resource/mcp", "/...", "/a/.../b", "/a/.b/..c",
            "/.x/", "/é/mcp", "/a%3bb", "/a%61", "//a", "/a//b", "/a/./b", "/a/../b", "/a/.", "/a/..", "/.", "/..", "/./", "/../",
            "/a/b/..", "a/b", "", "/a b", "/a\\b", "/a\u{7F}", "/a/b//", "/a/.../", "/..a/", "/a./b.",
        ]
        for path in paths {
            let full = try? RequestPath.normalizeFully(path)
            #expect(RequestPath.isNormal(path) == (full == path), "\(path): full form \(full ?? "refused")")
            #expect((try? RequestPath.normalize(path)) == full, "\(path)")
        }
    }
}
