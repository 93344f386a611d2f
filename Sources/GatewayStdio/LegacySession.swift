import Foundation
import Logging
import MCPTransport
public import MCPMessages
import NIOCore
import NIOPosix
import Synchronization

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

    let child: any MessagePeer
    let serviceName: String
    let logger: Logger
    private let replayLimit: Int
    private let state: Mutex<State>

    private struct State {
        var phase: Phase = .spare
        var ending: Ending?
        var sessionID: String?
        var owner: String?
        /// A session-based client bridged to a 2026-07-28-only child: the `_meta` members (raw JSON)
        /// stamped on every request forwarded to the child.
        var modernMeta: String?
        /// Taken over from an instance that is gone: the child is new, and its events before the
        /// takeover are lost (a `Last-Event-ID` of them resumes with what comes next).
        var reestablished = false
        /// Pool children (2026-07-28 clients) idle out on the pool's timeout; warm ones never do.
        var idleTimeout: Duration?
        var neverIdle = false
        /// Pool children idle out by their clients' last use, not by their own output or the
        /// streams the gateway itself keeps open on them (a translated child's notification
        /// stream would otherwise pin it forever).
        var poolChild = false
        var lastClientUse = ContinuousClock.now
        var protocolVersion: String?
        var lastActivity = ContinuousClock.now
        /// Requests in flight, their streams and the replay buffer (`SessionStreams`).
        var streams: SessionStreams
        /// The readers of the streams (HTTP responses), by stream id.
        var readers: [Int: StreamReader] = [:]
        /// `requestTimeout` timers per stream, cancelled when the stream's answers are all in.
        var timers: [Int: Scheduled<Void>] = [:]
        /// The child's deadline for answering initialize, cancelled when it does.
        var startTimer: Task<Void, Never>?
    }

    init(child: any MessagePeer, serviceName: String, replayLimit: Int, logger: Logger) {
        self.child = child
        self.serviceName = serviceName
        self.replayLimit = replayLimit
        self.logger = logger
        self.state = Mutex(State(streams: SessionStreams(replayLimit: replayLimit)))
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
            guard !state.neverIdle, state.streams.pendingCount == 0 else { return false }
            if state.poolChild { return state.lastClientUse < now - timeout }
            guard state.lastActivity < now - timeout else { return false }
            return !state.streams.hasReader
        }
    }

    /// Whether the fast relay may send `subject`'s request to this session as it is: the session
    /// is ready, belongs to `subject`, and is not translated for a 2026-07-28-only child. One
    /// look under the lock, with nothing copied (asked on every request, from every event loop).
    public func isRelayable(for subject: String?) -> Bool {
        state.withLock { state in state.phase == .ready && state.owner == subject && state.modernMeta == nil }
    }

    /// Set when the child speaks only 2026-07-28 and the gateway translates for a session-based client.
    public var modernMeta: String? {
        get { state.withLock { $0.modernMeta } }
        set { state.withLock { $0.modernMeta = newValue } }
    }

    /// Set when the session was taken over from a gateway instance that is gone.
    public var reestablished: Bool {
        get { state.withLock { $0.reestablished } }
        set { state.withLock { $0.reestablished = newValue } }
    }

    /// A warm pool child not yet assigned to anyone.
    public var isWarm: Bool { state.withLock { $0.neverIdle } }

    /// The session's own idle timeout (pool children), if any.
    var idleTimeout: Duration? { state.withLock { $0.idleTimeout } }

    /// Requests sent to the child and not answered yet.
    public var pendingCount: Int { state.withLock { $0.streams.pendingCount } }

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
        let streamID = try send(messages, timeout: timeout, origin: origin, reader: .stream(continuation))
        return Subscription(streamID: streamID, generation: 1, items: stream)
    }

    /// Sends one request to the child on a new stream whose messages go to `deliver`, called
    /// with each item in order (nil once the stream is done) while the session's lock is held:
    /// it must only hand the item on (the fast relay enqueues it on its connection's event
    /// loop). Returns the stream's id, for ``stopReading(streamID:)``.
    public func sendRequest(
        _ message: JSONRPCMessage, timeout: Duration?, deliver: @escaping @Sendable (StreamItem?) -> Void
    ) throws(ClosedError) -> Int {
        try send([message], timeout: timeout, origin: nil, reader: .callback(deliver))
    }

    /// The reader of a stream opened by ``sendRequest(_:timeout:deliver:)`` stopped (its answer is
    /// complete, or its client went away): as ``readerStopped(_:)``.
    public func stopReading(streamID: Int) {
        readerStopped(streamID: streamID, generation: 1)
    }

    private func send(_ messages: [JSONRPCMessage], timeout: Duration?, origin: String?, reader: StreamReader) throws(ClosedError) -> Int {
        let (streamID, lines): (Int, [ByteBuffer]) = try state.withLock { state throws(ClosedError) in
            if case .closed(let reason) = state.phase { throw ClosedError(reason: reason) }
            let now = ContinuousClock.now
            state.lastActivity = now
            state.lastClientUse = now
            let (streamID, lines, outputs) = state.streams.open(messages, origin: origin)
            // Opening only attaches the reader: nothing to hand over after the lock.
            _ = Self.apply(outputs, to: &state, newReader: reader)
            return (streamID, lines)
        }
        if let requestTimeout = timeout {
            let ids: [Int64] = state.withLock { $0.streams.pendingIDs(of: streamID) }
            // A timer of the loop the request is sent from (requests are sent from event loops:
            // the fast relay's, or a task's, which runs on one): no task per request. Expiring
            // is thread-safe.
            let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
            let timer = loop.scheduleTask(in: Self.timeAmount(requestTimeout)) { [weak self] in
                for gatewayID in ids {
                    self?.expire(gatewayID, after: requestTimeout)
                }
            }
            state.withLock { state in
                // Answered already (or the session closed): no timer to keep.
                if !state.streams.isFinished(streamID) { state.timers[streamID] = timer } else { timer.cancel() }
            }
        }
        for line in lines { child.send(line) }
        return streamID
    }

    /// `duration` as NIO's time amount (saturating: a timeout beyond ~292 years is never reached).
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .nanoseconds(seconds < 0 ? 0 : .max) }
        let (nanoseconds, overflowAgain) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return .nanoseconds(overflowAgain ? .max : max(0, nanoseconds))
    }

    /// `requestTimeout` passed: the client gets an error, the child a cancellation.
    private func expire(_ gatewayID: Int64, after timeout: Duration) {
        let serviceName = serviceName
        let expired = state.withLock { state -> ReaderActions? in
            let outputs = state.streams.answer(gatewayID) { clientRawID in
                JSONRPCErrorResponse.make(
                    rawID: clientRawID, code: JSONRPCErrorResponse.internalError,
                    message: "service \(serviceName): request timed out after \(timeout)", dataJSON: "{\"reason\":\"request_timeout\"}"
                )
            }
            guard let outputs else { return nil }
            return Self.apply(outputs, to: &state)
        }
        guard let expired else { return }
        expired.perform()
        logger.warning("request timed out; cancelled", metadata: ["session": "\(MCPSessionID.logged(sessionID))", "timeout": "\(timeout)"])
        child.send(ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\(gatewayID),\"reason\":\"request timed out\"}}"))
    }

    /// The client of a stream went away before its answers (2026-07-28: closing the response stream
    /// cancels the request): the child gets `notifications/cancelled` for each request still
    /// pending on the stream, and the stream ends. No-op once every answer arrived.
    public func cancelRequests(of subscription: Subscription, reason: String) {
        let (cancelled, actions): ([Int64], ReaderActions) = state.withLock { state in
            let (ids, outputs) = state.streams.cancel(streamID: subscription.streamID)
            return (ids, Self.apply(outputs, to: &state))
        }
        actions.perform()
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
                      let gatewayID = state.streams.gatewayID(ofClientRequest: requestID, origin: origin)
                else { return nil }
                let reason = message.paramsValue("reason").map { ",\"reason\":\($0)" } ?? ""
                return ByteBuffer(string: "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\(gatewayID)\(reason)}}")
            }
        }
        for line in lines { child.send(line) }
    }

    /// Attaches a GET stream: with `lastEventID`, resumes that stream from the replay buffer;
    /// without, opens (or reopens) the session's standalone stream.
    public func attachStream(lastEventID: String?) throws(AttachError) -> Subscription {
        let (stream, continuation) = AsyncStream<StreamItem>.makeStream(bufferingPolicy: .unbounded)
        let (streamID, generation, actions) = try state.withLock { state throws(AttachError) -> (Int, Int, ReaderActions) in
            if case .closed(let reason) = state.phase { throw .closed(reason) }
            state.lastActivity = .now
            do throws(SessionStreams.AttachFailure) {
                let (streamID, generation, outputs) = try state.streams.attach(lastEventID: lastEventID)
                return (streamID, generation, Self.apply(outputs, to: &state, newReader: .stream(continuation)))
            } catch {
                switch error {
                case .alreadyAttached: throw .alreadyAttached
                case .streamGone: throw .closed("stream gone")
                }
            }
        }
        actions.perform()
        return Subscription(streamID: streamID, generation: generation, items: stream)
    }

    /// The HTTP response reading `subscription` has stopped (stream complete, or the client went
    /// away). Messages keep buffering for a `Last-Event-ID` resume; a newer reader is left alone.
    public func readerStopped(_ subscription: Subscription) {
        readerStopped(streamID: subscription.streamID, generation: subscription.generation)
    }

    private func readerStopped(streamID: Int, generation: Int) {
        let actions = state.withLock { state in
            let now = ContinuousClock.now
            state.lastActivity = now
            state.lastClientUse = now
            let outputs = state.streams.readerStopped(streamID: streamID, generation: generation)
            return Self.apply(outputs, to: &state)
        }
        actions.perform()
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
        let routed = state.withLock { state -> ReaderActions? in
            let now = ContinuousClock.now
            state.lastActivity = now
            guard let outputs = state.streams.childSent(message) else { return nil }
            // A client's answer arrived: its reader stops on its own, a use of the session by
            // its client as much as the request was.
            if message.isResponse { state.lastClientUse = now }
            return Self.apply(outputs, to: &state)
        }
        if let routed {
            routed.perform()
        } else {
            logger.debug("child answered an unknown request id; dropped", metadata: ["id": "\(message.rawID ?? "none")"])
        }
    }

    /// Carries out what `SessionStreams` decided on the readers and timers; `newReader` is the
    /// reader of the call that asked (a POST's response, a GET).
    ///
    /// What goes to a reader this batch finishes is returned instead, for the caller to hand over
    /// once the lock is released (``ReaderActions/perform()``): handing an item over wakes the
    /// reader's event loop (a system call), and its task, on another thread, comes back for this
    /// lock at once (perf on the stdio full pipeline: ~1.7 µs per call spent waiting for it). The order of a
    /// reader's items still holds: a finished reader has left `readers` here, so nothing decided
    /// later reaches it, and what was decided for it earlier was handed over under the lock.
    private static func apply(_ outputs: [SessionStreams.Output], to state: inout State, newReader: StreamReader? = nil) -> ReaderActions {
        var finishing: [Int] = []
        for case .finishReader(let streamID) in outputs { finishing.append(streamID) }
        var actions = ReaderActions()
        for output in outputs {
            switch output {
            case .attachReader(let streamID):
                state.readers[streamID] = newReader
            case .deliver(let streamID, let item):
                guard let reader = state.readers[streamID] else { continue }
                if finishing.contains(streamID) {
                    actions.items.append((reader, item))
                } else {
                    reader.yield(item)
                }
            case .finishReader(let streamID):
                if let reader = state.readers.removeValue(forKey: streamID) { actions.finished.append(reader) }
            case .cancelTimer(let streamID):
                state.timers.removeValue(forKey: streamID)?.cancel()
            }
        }
        return actions
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
            let outputs = state.streams.close { clientRawID in
                JSONRPCErrorResponse.make(rawID: clientRawID, code: JSONRPCErrorResponse.internalError, message: reason, dataJSON: errorData)
            }
            // Handed over under the lock: a session ends once, and its readers' ends come last.
            Self.apply(outputs, to: &state).perform()
            for timer in state.timers.values { timer.cancel() }
            state.timers.removeAll()
            state.startTimer?.cancel()
            state.startTimer = nil
            // Readers of streams that had nothing pending (already ended above otherwise).
            for reader in state.readers.values {
                reader.yield(.end)
                reader.finish()
            }
            state.readers.removeAll()
            return true
        }
        return closed
    }
}

/// The last items of readers a batch of `SessionStreams` outputs finished, and their ends: handed
/// over after the session's lock (see `LegacySession.apply`).
struct ReaderActions {
    var items: [(StreamReader, StreamItem)] = []
    var finished: [StreamReader] = []

    func perform() {
        for (reader, item) in items { reader.yield(item) }
        for reader in finished { reader.finish() }
    }
}

/// Who reads one stream of a session: an HTTP response's async sequence, or the fast relay's
/// callback (nil: the stream is done).
enum StreamReader: Sendable {
    /// `loop`: the event loop the reading task runs on (its connection's), where items are handed
    /// over, in order: the task wakes where its response is written, not on the child's loop
    /// (nil: handed over on the calling thread).
    case stream(AsyncStream<StreamItem>.Continuation, loop: (any EventLoop)?)
    case callback(@Sendable (StreamItem?) -> Void)

    /// A reader for the calling task's async sequence.
    static func stream(_ continuation: AsyncStream<StreamItem>.Continuation) -> StreamReader {
        .stream(continuation, loop: MultiThreadedEventLoopGroup.currentEventLoop)
    }

    func yield(_ item: StreamItem) {
        switch self {
        case .stream(let continuation, nil): continuation.yield(item)
        case .stream(let continuation, let loop?): loop.execute { continuation.yield(item) }
        case .callback(let deliver): deliver(item)
        }
    }

    func finish() {
        switch self {
        case .stream(let continuation, nil): continuation.finish()
        case .stream(let continuation, let loop?): loop.execute { continuation.finish() }
        case .callback(let deliver): deliver(nil)
        }
    }
}
