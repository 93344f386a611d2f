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
        let deliver: AsyncStream<ByteBuffer>.Continuation
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
            let (notifications, deliver) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(16))
            let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
            listeners.withLock { $0[id] = Listener(router: router, identity: identity, deliver: deliver) }
            defer { listeners.withLock { _ = $0.removeValue(forKey: id) } }
            let (merged, into) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await original.write(WholeEventsWriter(into: into))
                    } catch {
                        into.finish(throwing: error)
                    }
                }
                group.addTask {
                    for await event in notifications { into.yield(event) }
                }
                for try await chunk in merged { try await writer.write(chunk) }
                group.cancelAll()
            }
            try await writer.finish(nil)
        }
        return response
    }

    /// After a reload: the notifications each open stream's caller is owed.
    func configurationReplaced(old: RuntimeConfiguration, new: RuntimeConfiguration) {
        let open = listeners.withLock { Array($0.values) }
        var sent = 0
        for listener in open {
            let before = (old.callPolicies[listener.router] ?? CompiledCallPolicy(CallPolicy())).view(for: listener.identity)
            let after = (new.callPolicies[listener.router] ?? CompiledCallPolicy(CallPolicy())).view(for: listener.identity)
            for kind in after.changedKinds(from: before) {
                listener.deliver.yield(ByteBuffer(string: "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/\(kind.rawValue)/list_changed\"}\n\n"))
                sent += 1
            }
        }
        if sent > 0 { logger.info("policies changed: list_changed sent to open session streams", metadata: ["notifications": "\(sent)"]) }
    }
}

/// Passes an SSE body on in whole events (a blank line ends one, after LF, CRLF or CR line
/// endings), so a notification of the gateway's can go between two of them, never inside one.
/// Comments (keep-alives) pass as they are.
struct WholeEventsWriter: ResponseBodyWriter {
    let into: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
    private var pending = ByteBuffer()
    private var scanned = 0
    private var atLineStart = true
    private var previousCR = false
    private var boundaryCR = false

    init(into: AsyncThrowingStream<ByteBuffer, any Error>.Continuation) {
        self.into = into
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
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
        guard boundary > 0, let events = pending.readSlice(length: boundary) else { return }
        scanned -= boundary
        pending.discardReadBytes()
        into.yield(events)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if pending.readableBytes > 0 { into.yield(pending) }
        into.finish()
    }
}
