import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// What the gateway decided to do with a WebSocket upgrade request it accepts: the fields of its
/// 101 answer, and what serves the connection once it speaks WebSocket.
struct WebSocketAcceptance: Sendable {
    /// Besides `Upgrade`, `Connection` and `Sec-WebSocket-Accept` (NIO's upgrader adds those).
    let responseFields: HTTPFields
    /// Adds the connection's WebSocket handler, on its event loop, once the 101 is flushed and
    /// NIO's frame codec is in place.
    let install: @Sendable (any Channel) throws -> Void
    /// The connection closed before it was upgraded (the 101 could not be written): what was
    /// reserved for the session is given back.
    let abandon: @Sendable () -> Void
}

/// HTTP/1.1 with WebSocket upgrades of the connection's first request. A connection that is not
/// upgraded is Hummingbird's HTTP/1 connection (`handleHTTP`, with the configuration's handlers);
/// an upgraded one is served by the channel handler its acceptance installs, with NIO's frame
/// codec, and its task ends there. Hummingbird's own WebSocket channel keeps the connection's
/// task for the socket's life, with its handler's and its ping task's frames: ~20 KB of a held
/// session's 58 (bench/results-connections.md); a channel handler holds none of it.
struct HTTP1UpgradeChannel: ServerChildChannel, HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        /// The connection's WebSocket handler serves it: nothing is left for the task.
        case webSocket
        /// The connection's `FastRelay` serves it, and starts Hummingbird's handling (in a task of
        /// its own) only when a request needs the full pipeline: nothing is left for this task.
        case relayed
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade was asked for and refused: an empty 400 (the log says why), as Hummingbird
        /// answered it.
        case failedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let http1: HTTP1Channel.Configuration
    /// The connection's idle timeout (Hummingbird's state handler closes it after this long idle).
    let idleTimeout: Duration?
    /// The largest WebSocket frame read (a message may span frames).
    let maxFrameSize: Int
    /// The gateway's decision on an upgrade request: nil refuses it.
    let shouldUpgrade: @Sendable (HTTPRequest, any Channel, Logger) async -> WebSocketAcceptance?
    /// The entry point relays requests itself (the configuration's handlers include a
    /// `FastRelayInstaller`): Hummingbird's handling of a connection waits until the connection's
    /// relay hands it a request. A task keeps the stack slabs its deepest await needed until it
    /// ends, and a connection whose requests the relay answers would keep Hummingbird's task, its
    /// slabs and its async channel for nothing (bench/results-connections.md).
    let defersHTTP: Bool

    init(
        responder: @escaping HTTPChannelHandler.Responder, http1: HTTP1Channel.Configuration, idleTimeout: Duration?, maxFrameSize: Int,
        defersHTTP: Bool = false, shouldUpgrade: @escaping @Sendable (HTTPRequest, any Channel, Logger) async -> WebSocketAcceptance?
    ) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.http1 = http1
        self.idleTimeout = idleTimeout
        self.maxFrameSize = maxFrameSize
        self.defersHTTP = defersHTTP
        self.shouldUpgrade = shouldUpgrade
    }

    /// What the upgrade handler learnt of the connection's first request, on its event loop.
    private struct Attempt {
        var made = false
        /// Until it is installed (or the connection closes first).
        var acceptance: WebSocketAcceptance?
    }

    private struct NotAccepted: Error {}

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let attempt = NIOLoopBoundBox(Attempt(), eventLoop: channel.eventLoop)
            let shouldUpgrade = self.shouldUpgrade
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: maxFrameSize,
                shouldUpgrade: { channel, head in
                    attempt.value.made = true
                    let request: HTTPRequest
                    do {
                        request = try HTTPRequest(head, secure: false, splitCookie: false)
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                    let decided = channel.eventLoop.makePromise(of: WebSocketAcceptance?.self)
                    decided.completeWithTask { await shouldUpgrade(request, channel, logger) }
                    return decided.futureResult.map { acceptance in
                        attempt.value.acceptance = acceptance
                        return acceptance.map { HTTPHeaders($0.responseFields) }
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let acceptance = attempt.value.acceptance else { throw NotAccepted() }
                        // Not kept for the connection's life: what it holds is the session's now.
                        attempt.value.acceptance = nil
                        try acceptance.install(channel)
                        return UpgradeResult.webSocket
                    }
                }
            )
            let http1 = self.http1, idleTimeout = self.idleTimeout, defersHTTP = self.defersHTTP
            let notUpgrading = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // The configuration's handlers begin with the gateway's HTTP/1 codec
                        // (`HTTP1ServerCodec`): no library codec before it.
                        try channel.pipeline.syncOperations.addHandlers(http1.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: logger))
                        if defersHTTP, !attempt.value.made, let installer = try? channel.pipeline.syncOperations.handler(type: FastRelayInstaller.self) {
                            installer.startHTTP = { [self] in
                                // At the pipeline's end, behind the relay: what it hands on.
                                let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true)
                                )
                                Task { await self.handleHTTP(asyncChannel: asyncChannel, logger: logger) }
                            }
                            return UpgradeResult.relayed
                        }
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        return attempt.value.made ? UpgradeResult.failedUpgrade(asyncChannel) : UpgradeResult.notUpgraded(asyncChannel)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: notUpgrading)
            // As Hummingbird's HTTP/1 channel: the async channel pipelines, Hummingbird answers
            // errors, HTTPTypes has validated the response fields.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let upgradeResult = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            channel.closeFuture.whenComplete { _ in
                attempt.value.acceptance?.abandon()
            }
            return Value(upgradeResult: upgradeResult, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .notUpgraded(let http1):
                await handleHTTP(asyncChannel: http1, logger: logger)
            case .failedUpgrade(let http1):
                await Self.refuseUpgrade(http1, logger: logger)
            case .webSocket, .relayed:
                // Served by its channel handlers from here on.
                return
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("connection closed before its first request")
        } catch {
            logger.debug("connection ended before its first request was served", metadata: ["error": "\(error)"])
        }
    }

    private static func refuseUpgrade(_ channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        do {
            try await channel.executeThenClose { _, outbound in
                try await outbound.write(contentsOf: [
                    .head(HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])), .end(nil),
                ])
            }
        } catch {
            logger.trace("the refused upgrade's answer could not be written", metadata: ["error": "\(error)"])
        }
    }

    /// NIO upgrades only a connection's first request. A later request asking for a WebSocket is
    /// sent back to the same URI with the connection closed, so that its client asks again as
    /// the first request of a new one (as Hummingbird's WebSocket channel does).
    private static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct ClosingAfterRedirect: Error {}
        return { request, writer, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                return try await responder(request, writer, channel)
            }
            var location = request.uri.path
            if let query = request.uri.query { location += "?\(query)" }
            try await writer.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location]))
            throw ClosingAfterRedirect()
        }
    }
}
