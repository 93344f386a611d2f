package import MCPMessages
package import NIOCore

/// The bookkeeping of one session-based MCP session over a child, as a value: the requests in
/// flight (with the gateway's ids, so they never collide with the gateway's own requests), the
/// streams their messages belong to (each POST's response stream and the session's GET stream),
/// which stream a message the child sends on its own goes to, and the bounded replay buffer that
/// lets a broken stream resume with `Last-Event-ID`.
///
/// Each event returns `Output`s that `LegacySession` carries out on the readers (async streams)
/// and timers it owns; tests drive it with no child and no reader.
package struct SessionStreams {
    package enum Output: Equatable {
        /// The reader created for this call starts reading `streamID`.
        case attachReader(streamID: Int)
        /// Give the reader of `streamID` this item.
        case deliver(streamID: Int, StreamItem)
        /// The reader of `streamID` is done (after `.end`, or cut off): finish it.
        case finishReader(streamID: Int)
        /// Every request of `streamID` is answered: its `requestTimeout` timer can go.
        case cancelTimer(streamID: Int)
    }

    package enum AttachFailure: Error, Equatable {
        /// The session's GET stream already has a reader.
        case alreadyAttached
        case streamGone
    }

    package struct Pending {
        package var clientRawID: String
        package var streamID: Int
        package var progressToken: String?
        /// Who sent the request, on a child that serves several callers: only they may cancel it.
        package var origin: String?
    }

    private struct EventStream {
        var buffered: [(seq: Int, bytes: ByteBuffer, final: Bool)] = []
        var hasReader = false
        var readerGeneration = 0
        var lastDeliveredSeq = 0
        var openRequests = 0
        var finished = false
        let isStandalone: Bool
    }

    private let replayLimit: Int
    private var nextGatewayID: Int64 = 1
    private var nextStreamID = 1
    private var nextSeq = 1
    private var pending: [Int64: Pending] = [:]
    private var streams: [Int: EventStream] = [:]
    private var standaloneStreamID: Int?
    private var bufferedEvents = 0
    /// Gateway ids in the order sent; entries already answered are dropped from the end as soon
    /// as they get there, so the last one is the newest request still pending (O(1) amortized per
    /// answer, whatever the number in flight).
    private var requestOrder: [Int64] = []
    /// Pending requests by progress token, so progress finds its stream without a scan.
    private var progressTokens: [String: Int64] = [:]

    package init(replayLimit: Int) {
        self.replayLimit = replayLimit
    }

    package var pendingCount: Int { pending.count }
    /// Events kept for replay, over all streams.
    package var replayCount: Int { bufferedEvents }
    package var hasReader: Bool { streams.values.contains { $0.hasReader } }

    // MARK: client → child

    /// Requests on a new stream, read from now on by the reader of this call; the lines to write
    /// to the child (ids replaced by the gateway's).
    package mutating func open(_ messages: [JSONRPCMessage], origin: String?) -> (streamID: Int, lines: [ByteBuffer], outputs: [Output]) {
        let streamID = nextStreamID
        nextStreamID += 1
        var stream = EventStream(isStandalone: false)
        stream.hasReader = true
        stream.readerGeneration = 1
        stream.openRequests = messages.count
        streams[streamID] = stream
        let lines = messages.map { message in
            let gatewayID = nextGatewayID
            nextGatewayID += 1
            let progressToken = message.paramsValue("_meta", "progressToken")
            pending[gatewayID] = Pending(clientRawID: message.rawID ?? "null", streamID: streamID, progressToken: progressToken, origin: origin)
            if let progressToken { progressTokens[progressToken] = gatewayID }
            requestOrder.append(gatewayID)
            return message.replacingID(with: String(gatewayID))
        }
        return (streamID, lines, [.attachReader(streamID: streamID)])
    }

    /// The gateway ids of the requests still pending on `streamID`.
    package func pendingIDs(of streamID: Int) -> [Int64] {
        pending.filter { $0.value.streamID == streamID }.map(\.key).sorted()
    }

    /// Whether every request of `streamID` is answered (or the stream is gone).
    package func isFinished(_ streamID: Int) -> Bool {
        streams[streamID]?.finished ?? true
    }

    /// A request answered by the gateway instead of the child (its timeout passed): the error
    /// `makeError` writes for the client's id; nil when it was answered already.
    package mutating func answer(_ gatewayID: Int64, with makeError: (_ clientRawID: String) -> ByteBuffer) -> [Output]? {
        guard let request = removePending(gatewayID) else { return nil }
        return emit(streamID: request.streamID, bytes: makeError(request.clientRawID), final: true, replayLimit: replayLimit)
    }

    /// The client of `streamID` went away before its answers: its pending requests are
    /// forgotten (returned, for the child to hear `notifications/cancelled`) and the stream ends
    /// without replay. Nothing happens once every answer arrived.
    package mutating func cancel(streamID: Int) -> (cancelled: [Int64], outputs: [Output]) {
        let ids = pendingIDs(of: streamID)
        for id in ids { removePending(id) }
        var outputs: [Output] = [.cancelTimer(streamID: streamID)]
        if !ids.isEmpty, let stream = streams.removeValue(forKey: streamID) {
            if stream.hasReader { outputs.append(.finishReader(streamID: streamID)) }
            bufferedEvents -= stream.buffered.count
        }
        return (ids, outputs)
    }

    /// The gateway's id of the client's request `clientRawID` sent by `origin`, for a
    /// cancellation; nil when no such request is pending (the cancellation is then dropped).
    package func gatewayID(ofClientRequest clientRawID: String, origin: String?) -> Int64? {
        pending.first { $0.value.clientRawID == clientRawID && $0.value.origin == origin }?.key
    }

    // MARK: readers

    /// A GET: with `lastEventID` of a stream still known, that stream resumed after the event;
    /// otherwise the session's standalone stream (opened when needed). A reader it had is ended.
    package mutating func attach(lastEventID: String?) throws(AttachFailure) -> (streamID: Int, generation: Int, outputs: [Output]) {
        var resumeFrom: (streamID: Int, seq: Int)?
        if let lastEventID, let parsed = Self.parseEventID(lastEventID), streams[parsed.streamID] != nil {
            resumeFrom = parsed
        }
        let streamID: Int
        if let resumeFrom {
            streamID = resumeFrom.streamID
        } else if let standalone = standaloneStreamID {
            guard streams[standalone]?.hasReader == false else { throw .alreadyAttached }
            streamID = standalone
        } else {
            streamID = openStandaloneStream()
        }
        guard var stream = streams[streamID] else { throw .streamGone }
        var outputs: [Output] = []
        if stream.hasReader {
            outputs += [.deliver(streamID: streamID, .end), .finishReader(streamID: streamID)]
        }
        outputs.append(.attachReader(streamID: streamID))
        stream.hasReader = true
        stream.readerGeneration += 1
        let from = resumeFrom?.seq ?? stream.lastDeliveredSeq
        for event in stream.buffered where event.seq > from {
            outputs.append(.deliver(streamID: streamID, .message(eventID: "\(streamID)_\(event.seq)", bytes: event.bytes, final: event.final)))
            stream.lastDeliveredSeq = max(stream.lastDeliveredSeq, event.seq)
        }
        if stream.finished {
            outputs += [.deliver(streamID: streamID, .end), .finishReader(streamID: streamID)]
            stream.hasReader = false
        }
        streams[streamID] = stream
        return (streamID, stream.readerGeneration, outputs)
    }

    /// The reader `generation` of `streamID` stopped (its stream complete, or the client went
    /// away). Messages keep buffering for a resume; a newer reader is left alone.
    package mutating func readerStopped(streamID: Int, generation: Int) -> [Output] {
        guard var stream = streams[streamID], stream.readerGeneration == generation else { return [] }
        let outputs: [Output] = stream.hasReader ? [.finishReader(streamID: streamID)] : []
        stream.hasReader = false
        if stream.finished, stream.buffered.allSatisfy({ $0.seq <= stream.lastDeliveredSeq }) {
            bufferedEvents -= stream.buffered.count
            streams[streamID] = nil
        } else {
            streams[streamID] = stream
        }
        return outputs
    }

    // MARK: child → client

    /// A message from the child: a response goes, with the client's id, to the stream of its
    /// request (nil: it answers no pending request, and is dropped); anything else to the stream
    /// `route` picks.
    package mutating func childSent(_ message: JSONRPCMessage) -> [Output]? {
        if message.isResponse {
            guard let rawID = message.rawID, let gatewayID = Int64(rawID), let request = removePending(gatewayID) else { return nil }
            return emit(streamID: request.streamID, bytes: message.replacingID(with: request.clientRawID), final: true, replayLimit: replayLimit)
        }
        return emit(streamID: route(message), bytes: message.bytes, final: false, replayLimit: replayLimit)
    }

    /// The stream for a message the child sent on its own: progress follows its token, a
    /// subscription's notifications their subscription; requests and log messages go to the
    /// request in flight; change notifications to the GET stream (when a reader has it).
    private func route(_ message: JSONRPCMessage) -> Int? {
        if message.method == "notifications/progress", let token = message.paramsValue("progressToken"),
           let gatewayID = progressTokens[token], let request = pending[gatewayID]
        {
            return request.streamID
        }
        // A 2026-07-28 child names the subscription (the `subscriptions/listen` request, by the id
        // the gateway gave it) a notification belongs to.
        if let subscription = message.paramsValue("_meta", "io.modelcontextprotocol/subscriptionId"), let gatewayID = Int64(subscription),
           let request = pending[gatewayID]
        {
            return request.streamID
        }
        let latestRequestStream = requestOrder.last.flatMap { pending[$0]?.streamID }
        let standaloneRead = standaloneStreamID.flatMap { streams[$0]?.hasReader == true ? $0 : nil }
        if message.isRequest || message.method == "notifications/message" {
            return latestRequestStream ?? standaloneStreamID
        }
        return standaloneRead ?? latestRequestStream ?? standaloneStreamID
    }

    // MARK: ending

    /// The session ended: every request in flight gets an error (`makeError`, for the client's
    /// id), every reader its end.
    package mutating func close(with makeError: (_ clientRawID: String) -> ByteBuffer) -> [Output] {
        var outputs: [Output] = []
        for (_, request) in pending.sorted(by: { $0.key < $1.key }) {
            outputs += emit(streamID: request.streamID, bytes: makeError(request.clientRawID), final: true, replayLimit: .max)
        }
        pending.removeAll()
        requestOrder.removeAll()
        progressTokens.removeAll()
        for (id, var stream) in streams.sorted(by: { $0.key < $1.key }) {
            stream.finished = true
            if stream.hasReader {
                outputs += [.deliver(streamID: id, .end), .finishReader(streamID: id)]
                stream.hasReader = false
            }
            streams[id] = stream
        }
        return outputs
    }

    // MARK: internals

    /// Forgets a pending request (answered, expired, cancelled) in O(1) amortized.
    @discardableResult
    private mutating func removePending(_ gatewayID: Int64) -> Pending? {
        guard let request = pending.removeValue(forKey: gatewayID) else { return nil }
        if let token = request.progressToken, progressTokens[token] == gatewayID { progressTokens[token] = nil }
        while let last = requestOrder.last, pending[last] == nil { requestOrder.removeLast() }
        if pending.isEmpty { requestOrder.removeAll(keepingCapacity: true) }
        return request
    }

    /// Appends to a stream (opening the standalone stream when there is none), delivers it when
    /// a reader is attached, and keeps the replay buffer within its bound.
    private mutating func emit(streamID: Int?, bytes: ByteBuffer, final: Bool, replayLimit: Int) -> [Output] {
        let id = streamID ?? openStandaloneStream()
        guard var stream = streams[id] else { return [] }
        var outputs: [Output] = []
        let seq = nextSeq
        nextSeq += 1
        stream.buffered.append((seq, bytes, final))
        bufferedEvents += 1
        if final {
            stream.openRequests -= 1
            if stream.openRequests <= 0 {
                stream.finished = true
                outputs.append(.cancelTimer(streamID: id))
            }
        }
        if stream.hasReader {
            outputs.append(.deliver(streamID: id, .message(eventID: "\(id)_\(seq)", bytes: bytes, final: final)))
            stream.lastDeliveredSeq = seq
            if stream.finished {
                outputs += [.deliver(streamID: id, .end), .finishReader(streamID: id)]
                stream.hasReader = false
                if !stream.isStandalone {
                    // Complete, and its reader had every event: nothing left to resume. Dropped
                    // now, so that a reader that saw the end need not report back
                    // (``readerStopped(streamID:generation:)`` then finds nothing to do).
                    bufferedEvents -= stream.buffered.count
                    streams[id] = nil
                    return outputs
                }
            }
        }
        streams[id] = stream
        trimReplayBuffer(limit: replayLimit)
        return outputs
    }

    /// Opens the session's GET stream (messages for it buffer until a GET attaches).
    private mutating func openStandaloneStream() -> Int {
        let id = nextStreamID
        nextStreamID += 1
        streams[id] = EventStream(isStandalone: true)
        standaloneStreamID = id
        return id
    }

    private mutating func trimReplayBuffer(limit: Int) {
        while bufferedEvents > limit {
            // Drop the oldest event of any stream.
            guard let (streamID, _) = streams.compactMap({ key, value in value.buffered.first.map { (key, $0.seq) } }).min(by: { $0.1 < $1.1 }),
                  var stream = streams[streamID]
            else { return }
            stream.buffered.removeFirst()
            bufferedEvents -= 1
            if stream.buffered.isEmpty, stream.finished, !stream.hasReader {
                streams[streamID] = nil
            } else {
                streams[streamID] = stream
            }
        }
    }

    package static func parseEventID(_ text: String) -> (streamID: Int, seq: Int)? {
        let parts = text.split(separator: "_")
        guard parts.count == 2, let stream = Int(parts[0]), let seq = Int(parts[1]) else { return nil }
        return (stream, seq)
    }
}
