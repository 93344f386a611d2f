public import Foundation
public import Logging
public import MCPMessages
public import NIOCore
public import Synchronization

/// One session-based (2025) MCP session bridged to one child process.
///
/// Requests from the client get gateway-assigned ids on their way to the child, so they can never
/// collide with the gateway's own requests, and each response finds the stream that asked for it.
/// Every message to the client belongs to a stream (a POST's response stream or the session's GET
/// stream), carries an event id, and is kept in a bounded replay buffer so a broken stream can be
/// resumed with `Last-Event-ID`.
public final class LegacySession: Sendable {
    public enum Phase: Sendable, Equatable {
        case spare
        case initializing
        case ready
        case closed(String)
    }

    /// A reader of one stream: the stream's id, the writer generation (a newer reader replaces an
    /// older one), and the items.
    public struct Subscription: Sendable {
        public let streamID: Int
        let generation: Int
        public let items: AsyncStream<StreamItem>
    }

    /// Why a session ended.
    public enum Ending: Sendable, Equatable {
        /// The child did not answer initialize within startTimeout.
        case startTimeout
        case childExited(ChildExit)
        /// DELETE, idle reaping, shutdown, reconfiguration.
        case ended
    }

    public struct ClosedError: Error, Sendable {
        public var reason: String
    }

    public enum AttachError: Error, Sendable {
        case closed(String)
        case alreadyAttached
    }

    let child: ChildProcess
    let serviceName: String
    let logger: Logger
    private let replayLimit: Int
    private let state: Mutex<State>

    private struct Pending {
        var clientRawID: String
        var streamID: Int
        var progressToken: String?
        /// Who sent the request, on a child that serves several callers: only they may cancel it.
        var origin: String?
    }

    private struct EventStream {
        var buffered: [(seq: Int, bytes: ByteBuffer, final: Bool)] = []
        var continuation: AsyncStream<StreamItem>.Continuation?
        var writerGeneration = 0
        var lastDeliveredSeq = 0
        var openRequests = 0
        var finished = false
        let isStandalone: Bool
    }

    private struct State {
        var phase: Phase = .spare
        var ending: Ending?
        var sessionID: String?
        var owner: String?
        /// A session-based client bridged to a 2026-07-28-only child: the `_meta` members (raw JSON)
        /// stamped on every request forwarded to the child.
        var modernMeta: String?
        /// Pool children (2026-07-28 clients) idle out on the pool's timeout; warm ones never do.
        var idleTimeout: Duration?
        var neverIdle = false
        /// Pool children idle out by their clients' last use, not by their own output or the
        /// streams the gateway itself keeps open on them (a translated child's notification
        /// stream would otherwise pin it forever).
        var poolChild = false
        var lastClientUse = ContinuousClock.now
        var protocolVersion: String?
        var nextGatewayID: Int64 = 1
        var nextStreamID = 1
        var nextSeq = 1
        var pending: [Int64: Pending] = [:]
        var streams: [Int: EventStream] = [:]
        var standaloneStreamID: Int?
        var bufferedEvents = 0
        var lastActivity = ContinuousClock.now
        /// Gateway ids in the order sent; entries already answered are dropped from the end as
        /// soon as they get there, so the last one is the newest request still pending (O(1)
        /// amortized per answer, whatever the number in flight).
        var requestOrder: [Int64] = []
        /// Pending requests by progress token, so progress finds its stream without a scan.
        var progressTokens: [String: Int64] = [:]
        /// `requestTimeout` timers per stream, cancelled when the stream's answers are all in.
        var timers: [Int: Task<Void, Never>] = [:]
        /// The child's deadline for answering initialize, cancelled when it does.
        var startTimer: Task<Void, Never>?
    }

    init(child: ChildProcess, serviceName: String, replayLimit: Int, logger: Logger) {
        self.child = child
        self.serviceName = serviceName
        self.replayLimit = replayLimit
        self.logger = logger
        self.state = Mutex(State())
    }

    public var sessionID: String? { state.withLock { $0.sessionID } }
    public var phase: Phase { state.withLock { $0.phase } }
    public var protocolVersion: String? { state.withLock { $0.protocolVersion } }
    public var owner: String? { state.withLock { $0.owner } }
    public var ending: Ending? { state.withLock { $0.ending } }
    public var closedReason: String? {
        state.withLock { state in
            if case .closed(let reason) = state.phase { return reason }
            return nil
        }
    }
    public var pid: Int32 { child.pid }

    /// Whether the session has been idle (no request in flight, no open stream) for its idle
    /// timeout (`defaultTimeout` unless the session has its own).
    func isIdle(now: ContinuousClock.Instant, defaultTimeout: Duration) -> Bool {
        state.withLock { state in
            let timeout = state.idleTimeout ?? defaultTimeout
            guard !state.neverIdle, state.pending.isEmpty else { return false }
            if state.poolChild { return state.lastClientUse < now - timeout }
            guard state.lastActivity < now - timeout else { return false }
            return !state.streams.values.contains { $0.continuation != nil }
        }
    }

    /// Set when the child speaks only 2026-07-28 and the gateway translates for a session-based client.
    public var modernMeta: String? {
        get { state.withLock { $0.modernMeta } }
        set { state.withLock { $0.modernMeta = newValue } }
    }

    /// A warm pool child not yet assigned to anyone.
    public var isWarm: Bool { state.withLock { $0.neverIdle } }

    /// The session's own idle timeout (pool children), if any.
    var idleTimeout: Duration? { state.withLock { $0.idleTimeout } }

    /// Requests sent to the child and not answered yet.
    public var pendingCount: Int { state.withLock { $0.pending.count } }

    /// A pool child changing hands: a warm child assigned to its first identity.
    public func assign(owner: String?, idleTimeout: Duration?, neverIdle: Bool) {
        state.withLock { state in
            state.owner = owner
            state.idleTimeout = idleTimeout
            state.neverIdle = neverIdle
            state.poolChild = true
            state.lastActivity = .now
            state.lastClientUse = .now
        }
    }

    func markInitializing() {
        state.withLock { $0.phase = .initializing }
    }

    /// The child's deadline for answering initialize; cancelled by ``activate`` or ``close``.
    func armStartTimer(_ timer: Task<Void, Never>) {
        let keep = state.withLock { state -> Bool in
            guard case .initializing = state.phase else { return false }
            state.startTimer = timer
            return true
        }
        if !keep { timer.cancel() }
    }

    func activate(sessionID: String, protocolVersion: String?, owner: String?) {
        state.withLock { state in
            state.startTimer?.cancel()
            state.startTimer = nil
            state.sessionID = sessionID
            state.protocolVersion = protocolVersion
            state.owner = owner
            if case .initializing = state.phase { state.phase = .ready }
        }
    }

    // MARK: client → child

    /// Sends requests to the child on a new stream; the returned sequence yields the messages of
    /// that stream (interim notifications and requests, then the responses) and ends after the last.
    /// `timeout`: how long the child has to answer each request before it gets an error and a
    /// cancellation (nil: no limit).
    public func sendRequests(_ messages: [JSONRPCMessage], timeout: Duration?, origin: String? = nil) throws(ClosedError) -> Subscription {
        let (stream, continuation) = AsyncStream<StreamItem>.makeStream(bufferingPolicy: .unbounded)
        let (streamID, lines): (Int, [ByteBuffer]) = try state.withLock { state throws(ClosedError) in
            if case .closed(let reason) = state.phase { throw ClosedError(reason: reason) }
            let streamID = state.nextStreamID
            state.nextStreamID += 1
            var eventStream = EventStream(isStandalone: false)
            eventStream.continuation = continuation
            eventStream.writerGeneration = 1
            eventStream.openRequests = messages.count
            state.streams[streamID] = eventStream
            state.lastActivity = .now
            state.lastClientUse = .now
            return (streamID, messages.map { message in
                let gatewayID = state.nextGatewayID
                state.nextGatewayID += 1
                let progressToken = message.paramsValue("_meta", "progressToken")
                state.pending[gatewayID] = Pending(
                    clientRawID: message.rawID ?? "null", streamID: streamID, progressToken: progressToken, origin: origin
                )
                if let progressToken { state.progressTokens[progressToken] = gatewayID }
                state.requestOrder.append(gatewayID)
                return message.replacingID(with: String(gatewayID))
            })
        }
        if let requestTimeout = timeout {
            let ids: [Int64] = state.withLock { state in state.pending.filter { $0.value.streamID == streamID }.map(\.key) }
            let timer = Task { [weak self] in
                guard (try? await Task.sleep(for: requestTimeout)) != nil else { return }
                for gatewayID in ids {
                    self?.expire(gatewayID, after: requestTimeout)
                }
            }
            state.withLock { state in
                // Answered already (or the session closed): no timer to keep.
                if state.streams[streamID]?.finished == false { state.timers[streamID] = timer } else { timer.cancel() }
            }
        }
        for line in lines { child.send(line) }
        return Subscription(streamID: streamID, generation: 1, items: stream)
    }

    /// `requestTimeout` passed: the client gets an error, the child a cancellation.
    private func expire(_ gatewayID: Int64, after timeout: Duration) {
        let expired = state.withLock { state -> Bool in
            guard let pending = Self.removePending(&state, gatewayID) else { return false }
            let error = JSONRPCErrorResponse.make(
                rawID: pending.clientRawID, code: JSONRPCErrorResponse.internalError,
                message: "service \(serviceName): request timed out after \(timeout)", dataJSON: "{\"reason\":\"request_timeout\"}"
            )
            Self.emit(&state, streamID: pending.streamID, bytes: error, final: true, replayLimit: replayLimit)
            return true
        }
        guard expired else { return }
        logger.warning("request timed out; cancelled", metadata: ["session": "\(sessionID ?? "none")", "timeout": "\(timeout)"])
        child.send(ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\(gatewayID),\"reason\":\"request timed out\"}}"))
    }

    /// The client of a stream went away before its answers (2026-07-28: closing the response stream
    /// cancels the request): the child gets `notifications/cancelled` for each request still
    /// pending on the stream, and the stream ends. No-op once every answer arrived.
    public func cancelRequests(of subscription: Subscription, reason: String) {
        let cancelled: [Int64] = state.withLock { state in
            let ids = state.pending.filter { $0.value.streamID == subscription.streamID }.map(\.key)
            for id in ids { Self.removePending(&state, id) }
            state.timers.removeValue(forKey: subscription.streamID)?.cancel()
            if !ids.isEmpty, var stream = state.streams[subscription.streamID] {
                stream.continuation?.finish()
                stream.continuation = nil
                state.bufferedEvents -= stream.buffered.count
                stream.buffered.removeAll()
                state.streams[subscription.streamID] = nil
            }
            return ids.sorted()
        }
        guard !cancelled.isEmpty else { return }
        logger.info("request cancelled: the client closed its stream", metadata: ["requests": "\(cancelled.count)"])
        let quoted = JSONRPCErrorResponse.jsonString(reason)
        for id in cancelled {
            child.send(ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\(id),\"reason\":\(quoted)}}"))
        }
    }

    /// Forwards notifications and responses (answers to the child's own requests) as they are,
    /// except that a cancellation names the gateway's id for the request. A cancellation reaches
    /// only requests of the same `origin` (on a child several callers share), and one that names
    /// no such pending request is dropped: passed on, the child would read the client's id as one
    /// of the gateway's and cancel somebody else's request.
    public func sendNotifications(_ messages: [JSONRPCMessage], origin: String? = nil) throws(ClosedError) {
        let lines: [ByteBuffer] = try state.withLock { state throws(ClosedError) in
            if case .closed(let reason) = state.phase { throw ClosedError(reason: reason) }
            state.lastActivity = .now
            state.lastClientUse = .now
            return messages.compactMap { message in
                guard message.method == "notifications/cancelled" else { return message.bytes }
                guard let requestID = message.paramsValue("requestId"),
                      let gatewayID = state.pending.first(where: { $0.value.clientRawID == requestID && $0.value.origin == origin })?.key
                else { return nil }
                let reason = message.paramsValue("reason").map { ",\"reason\":\($0)" } ?? ""
                return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\(gatewayID)\(reason)}}")
            }
        }
        for line in lines { child.send(line) }
    }

    /// Forgets a pending request (answered, expired, cancelled) in O(1) amortized.
    @discardableResult
    private static func removePending(_ state: inout State, _ gatewayID: Int64) -> Pending? {
        guard let pending = state.pending.removeValue(forKey: gatewayID) else { return nil }
        if let token = pending.progressToken, state.progressTokens[token] == gatewayID { state.progressTokens[token] = nil }
        while let last = state.requestOrder.last, state.pending[last] == nil { state.requestOrder.removeLast() }
        if state.pending.isEmpty { state.requestOrder.removeAll(keepingCapacity: true) }
        return pending
    }

    /// Attaches a GET stream: with `lastEventID`, resumes that stream from the replay buffer;
    /// without, opens (or reopens) the session's standalone stream.
    public func attachStream(lastEventID: String?) throws(AttachError) -> Subscription {
        let (stream, continuation) = AsyncStream<StreamItem>.makeStream(bufferingPolicy: .unbounded)
        let (streamID, generation) = try state.withLock { state throws(AttachError) -> (Int, Int) in
            if case .closed(let reason) = state.phase { throw .closed(reason) }
            state.lastActivity = .now
            var resumeFrom: (streamID: Int, seq: Int)?
            if let lastEventID, let parsed = Self.parseEventID(lastEventID), state.streams[parsed.streamID] != nil {
                resumeFrom = parsed
            }
            let streamID: Int
            if let resumeFrom {
                streamID = resumeFrom.streamID
            } else if let standalone = state.standaloneStreamID {
                guard state.streams[standalone]?.continuation == nil else { throw .alreadyAttached }
                streamID = standalone
            } else {
                streamID = Self.openStandaloneStream(&state)
            }
            guard var eventStream = state.streams[streamID] else { throw .closed("stream gone") }
            eventStream.continuation?.yield(.end)
            eventStream.continuation?.finish()
            eventStream.continuation = continuation
            eventStream.writerGeneration += 1
            let from = resumeFrom?.seq ?? eventStream.lastDeliveredSeq
            for event in eventStream.buffered where event.seq > from {
                continuation.yield(.message(eventID: "\(streamID)_\(event.seq)", bytes: event.bytes, final: event.final))
                eventStream.lastDeliveredSeq = max(eventStream.lastDeliveredSeq, event.seq)
            }
            if eventStream.finished {
                continuation.yield(.end)
                continuation.finish()
                eventStream.continuation = nil
            }
            state.streams[streamID] = eventStream
            return (streamID, eventStream.writerGeneration)
        }
        return Subscription(streamID: streamID, generation: generation, items: stream)
    }

    /// The HTTP response reading `subscription` has stopped (stream complete, or the client went
    /// away). Messages keep buffering for a `Last-Event-ID` resume; a newer reader is left alone.
    public func readerStopped(_ subscription: Subscription) {
        state.withLock { state in
            state.lastActivity = .now
            state.lastClientUse = .now
            guard var stream = state.streams[subscription.streamID], stream.writerGeneration == subscription.generation else { return }
            stream.continuation?.finish()
            stream.continuation = nil
            if stream.finished, stream.buffered.allSatisfy({ $0.seq <= stream.lastDeliveredSeq }) {
                state.bufferedEvents -= stream.buffered.count
                state.streams[subscription.streamID] = nil
            } else {
                state.streams[subscription.streamID] = stream
            }
        }
    }

    // MARK: child → client

    func handleChildLine(_ line: ByteBuffer) {
        let message: JSONRPCMessage
        do {
            message = try JSONRPCMessage(parsing: line)
        } catch {
            let preview = String(buffer: line.getSlice(at: line.readerIndex, length: min(200, line.readableBytes)) ?? ByteBuffer())
            logger.warning("child wrote a line that is not a JSON-RPC message; skipped", metadata: ["error": "\(error)", "line": "\(preview)"])
            return
        }
        state.withLock { state in
            state.lastActivity = .now
            if message.isResponse {
                guard let rawID = message.rawID, let gatewayID = Int64(rawID), let pending = Self.removePending(&state, gatewayID) else {
                    logger.debug("child answered an unknown request id; dropped", metadata: ["id": "\(message.rawID ?? "none")"])
                    return
                }
                let bytes = message.replacingID(with: pending.clientRawID)
                Self.emit(&state, streamID: pending.streamID, bytes: bytes, final: true, replayLimit: replayLimit)
                return
            }
            let streamID = Self.route(message, state: state)
            Self.emit(&state, streamID: streamID, bytes: message.bytes, final: false, replayLimit: replayLimit)
        }
    }

    /// Picks the stream for a message the child sent on its own: progress follows its token, a
    /// subscription's notifications their subscription;
    /// requests and log messages go to the request in flight; change notifications to the GET stream.
    private static func route(_ message: JSONRPCMessage, state: State) -> Int? {
        if message.method == "notifications/progress", let token = message.paramsValue("progressToken"),
           let gatewayID = state.progressTokens[token], let pending = state.pending[gatewayID]
        {
            return pending.streamID
        }
        // A 2026-07-28 child names the subscription (the `subscriptions/listen` request, by the id
        // the gateway gave it) a notification belongs to.
        if let subscription = message.paramsValue("_meta", "io.modelcontextprotocol/subscriptionId"), let gatewayID = Int64(subscription),
           let pending = state.pending[gatewayID]
        {
            return pending.streamID
        }
        let latestRequestStream = state.requestOrder.last.flatMap { state.pending[$0]?.streamID }
        let standaloneAttached = state.standaloneStreamID.flatMap { state.streams[$0]?.continuation != nil ? $0 : nil }
        if message.isRequest || message.method == "notifications/message" {
            return latestRequestStream ?? state.standaloneStreamID
        }
        return standaloneAttached ?? latestRequestStream ?? state.standaloneStreamID
    }

    /// Appends to a stream (creating the standalone stream when needed), delivers it if a
    /// writer is attached, and keeps the replay buffer within its bound.
    private static func emit(_ state: inout State, streamID: Int?, bytes: ByteBuffer, final: Bool, replayLimit: Int) {
        let id = streamID ?? openStandaloneStream(&state)
        guard var stream = state.streams[id] else { return }
        let seq = state.nextSeq
        state.nextSeq += 1
        stream.buffered.append((seq, bytes, final))
        state.bufferedEvents += 1
        if final {
            stream.openRequests -= 1
            if stream.openRequests <= 0 {
                stream.finished = true
                state.timers.removeValue(forKey: id)?.cancel()
            }
        }
        if let continuation = stream.continuation {
            continuation.yield(.message(eventID: "\(id)_\(seq)", bytes: bytes, final: final))
            stream.lastDeliveredSeq = seq
            if stream.finished {
                continuation.yield(.end)
                continuation.finish()
                stream.continuation = nil
            }
        }
        state.streams[id] = stream
        trimReplayBuffer(&state, limit: replayLimit)
    }

    /// Creates the session's GET stream (messages for it buffer until a GET attaches).
    private static func openStandaloneStream(_ state: inout State) -> Int {
        let id = state.nextStreamID
        state.nextStreamID += 1
        state.streams[id] = EventStream(isStandalone: true)
        state.standaloneStreamID = id
        return id
    }

    private static func trimReplayBuffer(_ state: inout State, limit: Int) {
        while state.bufferedEvents > limit {
            // Drop the oldest event of any stream.
            guard let (streamID, _) = state.streams.compactMap({ key, value in value.buffered.first.map { (key, $0.seq) } })
                .min(by: { $0.1 < $1.1 })
            else { return }
            guard var stream = state.streams[streamID] else { return }
            stream.buffered.removeFirst()
            state.bufferedEvents -= 1
            if stream.buffered.isEmpty, stream.finished, stream.continuation == nil {
                state.streams[streamID] = nil
            } else {
                state.streams[streamID] = stream
            }
        }
    }

    // MARK: ending

    /// Ends the session: every request in flight gets a JSON-RPC error, every stream closes.
    /// Returns false when it had already ended.
    @discardableResult
    func close(reason: String, errorData: String?, ending: Ending = .ended) -> Bool {
        let closed = state.withLock { state -> Bool in
            if case .closed = state.phase { return false }
            state.phase = .closed(reason)
            state.ending = ending
            for (_, pending) in state.pending.sorted(by: { $0.key < $1.key }) {
                let error = JSONRPCErrorResponse.make(rawID: pending.clientRawID, code: JSONRPCErrorResponse.internalError, message: reason, dataJSON: errorData)
                Self.emit(&state, streamID: pending.streamID, bytes: error, final: true, replayLimit: Int.max)
            }
            state.pending.removeAll()
            state.requestOrder.removeAll()
            state.progressTokens.removeAll()
            for timer in state.timers.values { timer.cancel() }
            state.timers.removeAll()
            state.startTimer?.cancel()
            state.startTimer = nil
            for (id, var stream) in state.streams {
                stream.finished = true
                stream.continuation?.yield(.end)
                stream.continuation?.finish()
                stream.continuation = nil
                state.streams[id] = stream
            }
            return true
        }
        return closed
    }

    static func parseEventID(_ text: String) -> (streamID: Int, seq: Int)? {
        let parts = text.split(separator: "_")
        guard parts.count == 2, let stream = Int(parts[0]), let seq = Int(parts[1]) else { return nil }
        return (stream, seq)
    }
}
