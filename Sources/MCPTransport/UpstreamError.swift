/// Why an upstream exchange failed; the server maps each case to one HTTP status.
public struct UpstreamError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The connection could not be made (refused, unreachable, DNS): 502.
        case unreachable
        /// No connection or no response head in time: 504.
        case timeout
        /// The upstream broke the exchange after it started, or answered nonsense: 502.
        case protocolFailure
        /// The user's connection to an OAuth-protected upstream is missing or no longer accepted
        /// (its token refused and not refreshable): the client is sent to connect again.
        case authorizationRequired
    }

    public var kind: Kind
    public var service: String
    public var detail: String

    public init(_ kind: Kind, service: String, detail: String) {
        self.kind = kind
        self.service = service
        self.detail = detail
    }

    public var description: String { "service \(service): \(detail)" }
}
