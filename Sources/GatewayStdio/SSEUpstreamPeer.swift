import AsyncHTTPClient
import Foundation
import GatewayAuth
import GatewayConfig
import Logging
import MCPMessages
public import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import Synchronization

/// What a session speaks JSON-RPC with: a child process on stdio, or one connection to a server
/// that speaks only the 2024-11-05 HTTP+SSE transport. Everything above (sessions, pools,
/// translation between eras, client transports) is the same for both.
public protocol MessagePeer: AnyObject, Sendable {
    /// The child's process id (0 for a remote peer): for the log.
    var pid: Int32 { get }
    /// Completes when the peer is gone (the process reaped, the connection closed).
    var exit: EventLoopFuture<ChildExit> { get }
    var isRunning: Bool { get }
    /// One JSON-RPC message to the server.
    func send(_ message: ByteBuffer)
    func signal(_ signal: Int32)
    @discardableResult func terminate(grace: Duration) async -> ChildExit
}

extension ChildProcess: MessagePeer {}

/// One connection to a 2024-11-05 HTTP+SSE server: `GET <url>` opens its stream, whose first
/// `endpoint` event names where messages are POSTed (same origin only: the server cannot send the
/// gateway's credentials elsewhere); every `message` event is one JSON-RPC message from it.
/// Messages are POSTed one at a time, in order; a request the server refuses is answered with a
/// JSON-RPC error, so no caller waits for an answer that cannot come. The connection's end is the
/// "child's" exit.
public final class SSEUpstreamPeer: MessagePeer {
    public let pid: Int32 = 0
    public let exit: EventLoopFuture<ChildExit>
    private let exitPromise: EventLoopPromise<ChildExit>
    private let outgoing: AsyncStream<ByteBuffer>.Continuation
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let ended = Mutex(false)

    public struct ConnectError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Opens the stream and waits (up to `timeout`) for its `endpoint` event; `onMessage` gets
    /// each message the server sends.
    static func connect(
        _ service: HTTPServiceConfiguration, http: HTTPClient, eventLoop: any EventLoop, timeout: Duration, logger: Logger,
        onMessage: @escaping @Sendable (ByteBuffer) -> Void
    ) async throws(ConnectError) -> SSEUpstreamPeer {
        var url = service.url
        let clientLogger = Logger.forHTTPClient
        if let credential = service.credentials?.queryItem {
            url += (url.contains("?") ? "&" : "?") + credential
        }
        guard let base = URL(string: url), let origin = Self.origin(of: base) else { throw ConnectError(description: "\(service.url) is not a URL") }
        var request = HTTPClientRequest(url: url)
        request.headers = Self.headers(service)
        request.headers.replaceOrAdd(name: "Accept", value: "text/event-stream")
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, deadline: .now() + .nanoseconds(Int64(service.connectTimeout.timeInterval * 1e9)), logger: clientLogger)
        } catch {
            throw ConnectError(description: "cannot open the SSE stream of \(service.url): \(error)")
        }
        guard response.status == .ok, MediaTypes.isEventStream(response.headers.first(name: "content-type")) else {
            throw ConnectError(description: "\(service.url) answered HTTP \(response.status.code) (\(response.headers.first(name: "content-type") ?? "no content type")), not an event stream")
        }
        let (endpoints, endpointContinuation) = AsyncStream<URL>.makeStream()
        let (ready, readyContinuation) = AsyncStream<Bool>.makeStream()
        let (outgoing, outgoingContinuation) = AsyncStream<ByteBuffer>.makeStream()
        let peer = SSEUpstreamPeer(eventLoop: eventLoop, outgoing: outgoingContinuation)
        let reader = Task {
            var decoder = SSEDecoder()
            var pending = ByteBuffer()
            var announced = false
            do {
                for try await chunk in response.body {
                    var chunk = chunk
                    pending.writeBuffer(&chunk)
                    while let event = try decoder.decode(buffer: &pending) {
                        if event.event == "endpoint" {
                            let text = String(buffer: event.data).trimmingCharacters(in: .whitespacesAndNewlines)
                            guard let target = URL(string: text, relativeTo: base)?.absoluteURL, Self.origin(of: target) == origin else {
                                logger.error("the SSE server named a message endpoint on another origin; not followed", metadata: ["service": "\(service.name)"])
                                break
                            }
                            if !announced {
                                announced = true
                                endpointContinuation.yield(target)
                                endpointContinuation.finish()
                                readyContinuation.yield(true)
                                readyContinuation.finish()
                            }
                        } else if event.event == nil || event.event == "message", event.data.readableBytes > 0 {
                            onMessage(event.data)
                        }
                    }
                }
            } catch {
                logger.debug("the SSE stream ended", metadata: ["service": "\(service.name)", "error": "\(error)"])
            }
            endpointContinuation.finish()
            readyContinuation.finish()
            peer.end()
        }
        let writer = Task {
            var iterator = endpoints.makeAsyncIterator()
            guard let target = await iterator.next() else { return }
            for await message in outgoing {
                await Self.post(message, to: target, service: service, http: http, logger: clientLogger, onMessage: onMessage)
            }
        }
        peer.tasks.withLock { $0 = [reader, writer] }
        // Ready once the server has said where messages go, within the start timeout.
        let announced = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var iterator = ready.makeAsyncIterator()
                return await iterator.next() ?? false
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        guard announced else {
            peer.end()
            throw ConnectError(description: "\(service.url) sent no endpoint event within \(timeout)")
        }
        return peer
    }

    private init(eventLoop: any EventLoop, outgoing: AsyncStream<ByteBuffer>.Continuation) {
        exitPromise = eventLoop.makePromise(of: ChildExit.self)
        exit = exitPromise.futureResult
        self.outgoing = outgoing
    }

    public var isRunning: Bool { !ended.withLock { $0 } }

    public func send(_ message: ByteBuffer) {
        outgoing.yield(message)
    }

    public func signal(_ signal: Int32) {
        end()
    }

    @discardableResult
    public func terminate(grace: Duration) async -> ChildExit {
        end()
        return (try? await exit.get()) ?? .exited(0)
    }

    /// The connection is closed (by either side): the "child" exited.
    func end() {
        let first = ended.withLock { ended in
            defer { ended = true }
            return !ended
        }
        guard first else { return }
        outgoing.finish()
        for task in tasks.withLock({ $0 }) { task.cancel() }
        exitPromise.succeed(.exited(0))
    }

    private static func post(_ message: ByteBuffer, to target: URL, service: HTTPServiceConfiguration, http: HTTPClient, logger: Logger, onMessage: @Sendable (ByteBuffer) -> Void) async {
        var request = HTTPClientRequest(url: target.absoluteString)
        request.method = .POST
        request.headers = headers(service)
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.body = .bytes(message)
        var failure: String?
        do {
            let response = try await http.execute(request, timeout: .nanoseconds(Int64(service.responseHeaderTimeout.timeInterval * 1e9)), logger: Logger.forHTTPClient)
            _ = try? await response.body.collect(upTo: 64 * 1024)
            if !(200..<300).contains(response.status.code) { failure = "HTTP \(response.status.code)" }
        } catch {
            failure = "\(error)"
        }
        guard let failure else { return }
        logger.warning("the SSE server refused a message", metadata: ["service": "\(service.name)", "reason": "\(failure)"])
        // A request nobody will answer is answered here.
        if let parsed = try? JSONRPCMessage(parsing: message), parsed.isRequest {
            onMessage(JSONRPCErrorResponse.make(rawID: parsed.rawID, code: JSONRPCErrorResponse.internalError, message: "service \(service.name) refused the message (\(failure))"))
        }
    }

    private static func headers(_ service: HTTPServiceConfiguration) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for header in service.headers { headers.add(name: header.name, value: header.value) }
        for field in service.credentials?.headerFields ?? [] { headers.replaceOrAdd(name: field.name, value: field.value) }
        return headers
    }

    private static func origin(of url: URL) -> String? {
        guard let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else { return nil }
        return "\(scheme)://\(host):\(url.port ?? (scheme == "https" ? 443 : 80))"
    }
}
