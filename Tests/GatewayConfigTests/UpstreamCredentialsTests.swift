import Foundation
import GatewayConfig
import Testing

/// `services.<s>.http.auth` and secret references as the loader reads them.
@Suite struct UpstreamCredentialsTests {
    static func yaml(auth: String, extra: String = "") -> String { """
    entryPoints: { web: { address: "127.0.0.1:8080" } }
    publicURL: "http://localhost:8080"
    routers:
      r: { rule: "PathPrefix(`/r`)", service: s }
    services:
      s:
        http:
          url: "http://127.0.0.1:1/mcp"
          auth: \(auth)\(extra)
    """ }

    static func credentials(_ auth: String, environment: [String: String] = [:]) throws -> UpstreamCredentials? {
        let configuration = try ConfigurationLoader(environment: environment).load(yaml: yaml(auth: auth))
        guard case .http(let service)? = configuration.services["s"] else { return nil }
        return service.credentials
    }

    @Test func everyKindResolvesItsSecretAndNoDescriptionShowsIt() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID().uuidString)")
        try "from-file  \nignored\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try Self.credentials(#"{ bearer: "file://\#(file.path)" }"#) == .bearer("from-file"))
        #expect(try Self.credentials(#"{ apiKey: { header: X-Key, value: "env://KEY" } }"#, environment: ["KEY": "k1"]) == .apiKey(header: "X-Key", value: "k1"))
        let basic = try #require(try Self.credentials(#"{ basic: { username: svc, password: literal-pass } }"#))
        #expect(basic.headerFields.first?.value == "Basic " + Data("svc:literal-pass".utf8).base64EncodedString())
        let query = try #require(try Self.credentials(#"{ query: { name: key, value: "a&b=c" } }"#))
        #expect(query.queryItem == "key=a%26b%3Dc" && query.headerFields.isEmpty)
        for credentials in [UpstreamCredentials.bearer("s3cret"), .apiKey(header: "X", value: "s3cret"), .basic(username: "u", password: "s3cret"), .query(name: "k", value: "s3cret")] {
            #expect(!"\(credentials)".contains("s3cret"))
        }
    }

    @Test func mistakesAreReportedWithTheirPositionAndWithoutTheSecret() {
        let yaml = Self.yaml(auth: #"{ apiKey: { header: "Bad Header", value: x }, bearer: y }"#) + """

              passAuthorization: true
          t:
            http:
              url: "http://127.0.0.1:1/mcp"
              auth: { basic: { username: "env://NOPE", password: "file:///nonexistent/secret" } }
        """
        do {
            _ = try ConfigurationLoader(environment: [:]).load(yaml: yaml, file: "c.yaml")
            Issue.record("expected errors")
        } catch {
            let text = error.description
            #expect(text.contains("c.yaml:9:13: services.s.http.auth: auth takes exactly one of bearer, apiKey, basic or query"), "\(text)")
            #expect(text.contains("services.t.http.auth.basic.username: the environment variable NOPE is not set"), "\(text)")
        }
    }
}
