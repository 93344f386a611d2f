import AuthorizationServer
import GatewayConfig
import GatewayPolicies
import Hummingbird
import HTTPTypes
import Logging
import MCPMessages
import NIOCore
import Synchronization

/// Tells session-based clients when a reload changes what they may see: the open GET streams of
/// their sessions (where a server's own `list_changed` notifications arrive) are known by router
/// and caller; after a reload, each stream whose caller's rules changed for tools, resources or
/// prompts gets that kind's `notifications/*/list_changed`, between the server's events.
final class ListChangeNotifier: Sendable {
    private struct Listener {
        let router: String
        let identity: UserIdentity?
        /// Hands one SSE event to the stream (between two of the upstream's).
        let deliver: @Sendable (ByteBuffer) -> Void
    }

    private let listeners = Mutex<[Int: Listener]>([:])
    private let nextID = Atomic<Int>(0)
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    var openStreams: Int { listeners.withLock { $0.count } }

    /// A session's GET stream, with room for the gateway's own notifications between its events.
    func streaming(_ response: Response, router: String, identity: UserIdentity?) -> Response {
        var response = response
        let original = response.body
        response.headers[.contentLength] = nil
        response.body = ResponseBody { [self] writer in
            let (merged, into) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
            // A notification is one whole event, yielded at once, and the upstream's events go onto
            // the same stream whole: it lands between two of them. Straight onto the stream, not
            // through a task of its own: a held stream keeps its tasks for its whole life.
            let id = listen(router: router, identity: identity) { into.yield($0) }
            defer { stopListening(id) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await original.write(WholeEventsWriter(into: into))
                    } catch {
                        into.finish(throwing: error)
                    }
                }
                for try await chunk in merged { try await writer.write(chunk) }
                group.cancelAll()
            }
            try await writer.finish(nil)
        }
        return response
    }

    /// A stream relayed elsewhere (the fast relay's): `deliver` is called with each notification
    /// its caller is owed, on any thread, until `stopListening` with the id returned.
    func listen(router: String, identity: UserIdentity?, deliver: @escaping @Sendable (ByteBuffer) -> Void) -> Int {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        listeners.withLock { $0[id] = Listener(router: router, identity: identity, deliver: deliver) }
        return id
    }

    func stopListening(_ id: Int) {
        listeners.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// After a reload: the notifications each open stream's caller is owed.
    func configurationReplaced(old: RuntimeConfiguration, new: RuntimeConfiguration) {
        let open = listeners.withLock { Array($0.values) }
        var sent = 0
        for listener in open {
            let before = (old.callPolicies[listener.router] ?? CompiledCallPolicy(CallPolicy())).view(for: listener.identity)
            let after = (new.callPolicies[listener.router] ?? CompiledCallPolicy(CallPolicy())).view(for: listener.identity)
            for kind in after.changedKinds(from: before) {
                listener.deliver(ByteBuffer(string: "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/\(kind.rawValue)/list_changed\"}\n\n"))
                sent += 1
            }
        }
        if sent > 0 { logger.info("policies changed: list_changed sent to open session streams", metadata: ["notifications": "\(sent)"]) }
    }
}

/// Splits an SSE body into whole events (a blank line ends one, after LF, CRLF or CR line
/// endings), so that a notification of the gateway's can go between two of them, never inside
/// one. Comments (keep-alives) are events like any other here.
struct SSEEventSplitter {
    private var pending = ByteBuffer()
    private var scanned = 0
    private var atLineStart = true
    private var previousCR = false
    private var boundaryCR = false

    init() {}

    /// The events `buffer` completes (with any begun before it), nil when it completes none;
    /// the rest is kept for the next call.
    mutating func wholeEvents(appending buffer: ByteBuffer) -> ByteBuffer? {
        var buffer = buffer
        pending.writeBuffer(&buffer)
        var boundary = 0
        let (lf, cr) = (UInt8(ascii: "\n"), UInt8(ascii: "\r"))
        pending.withUnsafeReadableBytes { bytes in
            for index in scanned..<bytes.count {
                let byte = bytes[index]
                if byte == lf, previousCR {
                    previousCR = false
                    // The LF of a CRLF that ended an event belongs to that event.
                    if boundaryCR { boundary = index + 1 }
                    continue
                }
                boundaryCR = false
                if byte == lf || byte == cr {
                    previousCR = byte == cr
                    if atLineStart {
                        boundary = index + 1
                        boundaryCR = byte == cr
                    }
                    atLineStart = true
                } else {
                    previousCR = false
                    atLineStart = false
                }
            }
        }
        scanned = pending.readableBytes
        guard boundary > 0, let events = pending.readSlice(length: boundary) else { return nil }
        scanned -= boundary
        pending.discardReadBytes()
        return events
    }

    /// What is left at the end of the body: an event cut short, sent as it is.
    mutating func rest() -> ByteBuffer? {
        guard pending.readableBytes > 0 else { return nil }
        defer { pending = ByteBuffer() }
        return pending
    }
}

/// Passes an SSE body on in whole events (`SSEEventSplitter`).
struct WholeEventsWriter: ResponseBodyWriter {
    let into: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
    private var events = SSEEventSplitter()

    init(into: AsyncThrowingStream<ByteBuffer, any Error>.Continuation) {
        self.into = into
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
        if let whole = events.wholeEvents(appending: buffer) { into.yield(whole) }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if let rest = events.rest() { into.yield(rest) }
        into.finish()
    }
}
