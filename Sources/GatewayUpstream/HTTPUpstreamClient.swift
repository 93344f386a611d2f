public import MCPTransport
public import AsyncHTTPClient
import Foundation
import GatewayAuth
public import GatewayConfig
public import Logging
public import NIOCore
public import NIOHTTP1
public import NIOPosix
import Instrumentation
import Synchronization
import Tracing

/// The HTTP clients the proxy uses, one per distinct connect timeout (a client-wide setting in
/// AsyncHTTPClient). Clients live as long as the gateway, so reloads never cut open streams.
public final class UpstreamClients: Sendable {
    private let clients = Mutex<[Duration: HTTPClient]>([:])
    private let eventLoopGroup: any EventLoopGroup

    public init(eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.eventLoopGroup = eventLoopGroup
    }

    public func client(connectTimeout: Duration) -> HTTPClient {
        clients.withLock { clients in
            if let client = clients[connectTimeout] { return client }
            var configuration = HTTPClient.Configuration(
                redirectConfiguration: .disallow,
                timeout: .init(connect: .nanoseconds(Int64(connectTimeout.timeInterval * 1e9)), read: nil),
                // An MCP client may hold many SSE streams to one upstream at once; the default of 8
                // connections per host would queue the ninth.
                connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096),
                ignoreUncleanSSLShutdown: false,
                decompression: .disabled
            )
            configuration.httpVersion = .http1Only
            // A refused connection should become a 502 at once, not after retrying for the whole
            // connect timeout.
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.traceOnlyWithInstalledTracer()
            let client = HTTPClient(eventLoopGroupProvider: .shared(eventLoopGroup), configuration: configuration)
            clients[connectTimeout] = client
            return client
        }
    }

    public func shutdown() async {
        let all = clients.withLock { clients in
            let all = Array(clients.values)
            clients.removeAll()
            return all
        }
        for client in all {
            try? await client.shutdown()
        }
    }
}

/// A user's own credentials for an OAuth-protected upstream (`services.<s>.http.oauth`): the
/// current access token, and a fresh one after the upstream refused a token.
public struct UpstreamAuthorization: Sendable {
    /// The token to send; nil when the user is no longer connected.
    public let token: @Sendable () async -> String?
    /// A token after `stale` was refused (refreshed once, by one caller at a time); nil when the
    /// refresh was refused (the user must connect again). The same token back: not refreshable now.
    public let refreshed: @Sendable (_ stale: String) async -> String?
    /// The user is out: the upstream refused even a fresh token.
    public let disconnect: @Sendable () async -> Void

    public init(token: @escaping @Sendable () async -> String?, refreshed: @escaping @Sendable (String) async -> String?, disconnect: @escaping @Sendable () async -> Void) {
        self.token = token
        self.refreshed = refreshed
        self.disconnect = disconnect
    }
}

/// Sends one request to an HTTP MCP upstream and returns once its response head arrives;
/// the body is left to the caller to stream.
public struct HTTPUpstream: Sendable {
    public let service: HTTPServiceConfiguration
    private let client: HTTPClient
    /// For `oauth` services: the calling user's token, set per request by the era dispatch.
    public var authorization: UpstreamAuthorization?
    /// Where the fast relay sends this upstream's requests (nil: a URL the relay does not carry).
    public let relayTarget: RelayTarget?
    /// What this route's requests to the service leave out of the client's headers and add of
    /// the gateway's own (the router's removals and identity header names, the service's headers).
    public let headerRules: UpstreamHeaderRules

    public init(service: HTTPServiceConfiguration, clients: UpstreamClients, headerRules: UpstreamHeaderRules) {
        self.service = service
        self.headerRules = headerRules
        self.client = clients.client(connectTimeout: service.connectTimeout)
        self.relayTarget = RelayTarget(url: service.url)
    }

    /// The gateway's own credentials for this upstream (the client's never get this far).
    public func addCredentials(to headers: inout HTTPHeaders) {
        for field in service.credentials?.headerFields ?? [] {
            headers.replaceOrAdd(name: field.name, value: field.value)
        }
    }

    /// The fast relay's request target: the URL's path and query, the client's query, and a
    /// credential the upstream takes in the query.
    public func relayRequestTarget(query: String?) -> String {
        guard let relayTarget else { return "/" }
        var target = relayTarget.requestTarget(query: query)
        if let credential = service.credentials?.queryItem { target += (target.contains("?") ? "&" : "?") + credential }
        return target
    }

    /// - Parameter query: the client's raw query string, appended to the service URL's own.
    public func send(
        method: HTTPMethod, query: String?, headers: HTTPHeaders, body: ByteBuffer?, logger: Logger
    ) async throws(UpstreamError) -> HTTPClientResponse {
        var url = service.url
        if let query, !query.isEmpty {
            url += (url.contains("?") ? "&" : "?") + query
        }
        let clientLogger = Logger.forHTTPClient
        if let credential = service.credentials?.queryItem {
            url += (url.contains("?") ? "&" : "?") + credential
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers = headers
        addCredentials(to: &request.headers)
        if let body { request.body = .bytes(body) }
        let timeout = TimeAmount.nanoseconds(Int64(service.responseHeaderTimeout.timeInterval * 1e9))
        guard let authorization else {
            do {
                return try await client.execute(request, timeout: timeout, logger: clientLogger)
            } catch {
                throw Self.classify(error, service: service)
            }
        }
        // The user's token (the client logs nothing: `Logger.forHTTPClient`).
        guard let token = await authorization.token() else {
            throw UpstreamError(.authorizationRequired, service: service.name, detail: "the user is not connected")
        }
        request.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(token)")
        let first: HTTPClientResponse
        do { first = try await client.execute(request, timeout: timeout, logger: clientLogger) } catch { throw Self.classify(error, service: service) }
        guard first.status == .unauthorized else { return first }
        // Refused: refreshed once and sent once more. An upstream's 401 never reaches the client,
        // whose own credentials are the gateway's.
        _ = try? await first.body.collect(upTo: 64 * 1024)
        guard let fresh = await authorization.refreshed(token) else {
            throw UpstreamError(.authorizationRequired, service: service.name, detail: "the upstream refused the user's token and the refresh was refused")
        }
        guard fresh != token else {
            throw UpstreamError(.protocolFailure, service: service.name, detail: "the upstream refused the user's token, and it cannot be refreshed now")
        }
        request.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(fresh)")
        let second: HTTPClientResponse
        do { second = try await client.execute(request, timeout: timeout, logger: clientLogger) } catch { throw Self.classify(error, service: service) }
        guard second.status == .unauthorized else { return second }
        _ = try? await second.body.collect(upTo: 64 * 1024)
        await authorization.disconnect()
        throw UpstreamError(.authorizationRequired, service: service.name, detail: "the upstream refused a freshly refreshed token")
    }

    static func classify(_ error: any Error, service: HTTPServiceConfiguration) -> UpstreamError {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout, .deadlineExceeded, .readTimeout, .writeTimeout:
                return UpstreamError(.timeout, service: service.name, detail: "no response within \(describe(service.responseHeaderTimeout)) (connect timeout \(describe(service.connectTimeout)))")
            case .remoteConnectionClosed:
                return UpstreamError(.protocolFailure, service: service.name, detail: "the upstream closed the connection before answering")
            default:
                break
            }
        }
        if error is CancellationError {
            return UpstreamError(.protocolFailure, service: service.name, detail: "request cancelled")
        }
        let text = String(describing: error)
        if text.lowercased().contains("timeout") || text.lowercased().contains("timed out") {
            return UpstreamError(.timeout, service: service.name, detail: "timed out connecting to the upstream")
        }
        return UpstreamError(.unreachable, service: service.name, detail: "cannot connect to the upstream (\(text))")
    }

    static func describe(_ duration: Duration) -> String {
        let seconds = duration.timeInterval
        return seconds == seconds.rounded() ? "\(Int(seconds))s" : String(format: "%.3fs", seconds)
    }
}

extension HTTPClient.Configuration {
    /// AsyncHTTPClient traces every request with the global tracer, and without `tracing:` that is
    /// the no-op one: a span that records nothing, but whose attributes (the URL taken apart, the
    /// method, the body size) are still computed, ~2 % of a full-pipeline request. Without a tracer
    /// installed, the client does not trace at all.
    package mutating func traceOnlyWithInstalledTracer() {
        if InstrumentationSystem.tracer is NoOpTracer { tracing.tracer = nil }
    }
}
