package import Hummingbird

/// What the authorization server's endpoints need of a request's context.
package protocol AuthorizationRequestContext: RequestContext {
    /// The client's address (behind trusted proxies, the one they name), for per-address limits.
    var clientIP: String? { get }
    /// Runs `operation`, cancelled when the client hangs up first (a metadata document fetch
    /// started for a browser that went away).
    func cancellingOnClose<Value: Sendable>(_ operation: @escaping @Sendable () async throws -> Value) async throws -> Value
}
