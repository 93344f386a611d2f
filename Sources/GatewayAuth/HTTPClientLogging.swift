package import Logging

extension Logger {
    /// The logger handed to AsyncHTTPClient for a request: one that drops everything.
    /// AsyncHTTPClient logs only at `debug` and `trace`, and there it logs request URLs, response
    /// heads and the first bytes of each body part, which carry what must not be logged
    /// (credentials in a query, upstream session ids, a token endpoint's `access_token`); so
    /// nothing it says is wanted. A logger that drops everything also costs nothing when the
    /// client sets its per-request metadata (the stream handler formats all of it again on every
    /// change: 3 % of a full-pipeline request's CPU).
    package static let forHTTPClient = Logger(label: "mcp-gateway.http-client", factory: { _ in SwiftLogNoOpLogHandler() })
}
