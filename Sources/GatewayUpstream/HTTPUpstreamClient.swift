public import MCPTransport
public import AsyncHTTPClient
import Foundation
public import GatewayConfig
public import Logging
public import NIOCore
public import NIOHTTP1
public import NIOPosix
import Synchronization

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

/// Sends one request to an HTTP MCP upstream and returns once its response head arrives;
/// the body is left to the caller to stream.
public struct HTTPUpstream: Sendable {
    public let service: HTTPServiceConfiguration
    private let client: HTTPClient

    public init(service: HTTPServiceConfiguration, clients: UpstreamClients) {
        self.service = service
        self.client = clients.client(connectTimeout: service.connectTimeout)
    }

    /// - Parameter query: the client's raw query string, appended to the service URL's own.
    public func send(
        method: HTTPMethod, query: String?, headers: HTTPHeaders, body: ByteBuffer?, logger: Logger
    ) async throws(UpstreamError) -> HTTPClientResponse {
        var url = service.url
        if let query, !query.isEmpty {
            url += (url.contains("?") ? "&" : "?") + query
        }
        var clientLogger = logger
        if let credential = service.credentials?.queryItem {
            url += (url.contains("?") ? "&" : "?") + credential
            // The HTTP client logs request URLs at debug and trace: this one holds a secret.
            if clientLogger.logLevel < .info { clientLogger.logLevel = .info }
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers = headers
        // The gateway's own credentials for this upstream (the client's never get this far).
        for field in service.credentials?.headerFields ?? [] {
            request.headers.replaceOrAdd(name: field.name, value: field.value)
        }
        if let body { request.body = .bytes(body) }
        let timeout = TimeAmount.nanoseconds(Int64(service.responseHeaderTimeout.timeInterval * 1e9))
        do {
            return try await client.execute(request, timeout: timeout, logger: clientLogger)
        } catch {
            throw Self.classify(error, service: service)
        }
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
