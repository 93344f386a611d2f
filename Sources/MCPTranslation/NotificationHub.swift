import NIOFoundationEssentialsCompat
import Foundation
package import MCPMessages
package import NIOCore
import Synchronization

/// The notifications a translated server sends on its own (list changes, resource updates), fanned
/// out to the `subscriptions/listen` streams that asked for them. Fed by a stdio child's standalone
/// stream or a session-based HTTP upstream's GET stream. Resource subscriptions are counted across
/// listeners: the server is sent `resources/subscribe` for a URI when the first listener asks for
/// it and `resources/unsubscribe` when the last one leaves.
package final class NotificationHub: Sendable {
    /// Sends `resources/subscribe` (true) or `resources/unsubscribe` (false) for a URI to the
    /// server; whether it accepted.
    package typealias ResourceSubscriber = @Sendable (_ uri: String, _ subscribe: Bool) async -> Bool

    private struct Listener {
        package let methods: Set<String>
        package let resources: Set<String>
        package let subscriptionID: String
        package let continuation: AsyncStream<ByteBuffer?>.Continuation
    }

    private struct State {
        package var next = 0
        package var all: [Int: Listener] = [:]
        package var ended = false
        package var resources = SubscriptionCounts()
    }

    private let state = Mutex(State())
    /// The task reading an HTTP upstream's stream (nil for a stdio child's hub).
    private let reader = Mutex<Task<Void, Never>?>(nil)
    private let subscriber: ResourceSubscriber?

    /// Fed by `next` (a stdio child's standalone stream) until it returns nil; reading goes on
    /// when listeners leave (the child's stream outlives them).
    package init(following next: @escaping @Sendable () async -> ByteBuffer?, subscriber: ResourceSubscriber? = nil) {
        self.subscriber = subscriber
        Task { [weak self] in
            while let bytes = await next() { self?.deliver(bytes) }
            self?.end()
        }
    }

    /// A hub whose source is gone already: a listener hears the end at once.
    package init(ended: Void) {
        subscriber = nil
        state.withLock { $0.ended = true }
    }

    /// A hub with no source: its listeners hear nothing until they leave (a server that cannot
    /// announce anything).
    package init() {
        subscriber = nil
    }

    /// Fed by `next` (the messages of a session-based HTTP upstream's GET stream) until it returns
    /// nil; the stream is closed (the reading task cancelled) when the last listener leaves.
    package init(reading next: @escaping @Sendable () async -> ByteBuffer?, subscriber: ResourceSubscriber? = nil) {
        self.subscriber = subscriber
        let reader = Task { [weak self] in
            while let bytes = await next() { self?.deliver(bytes) }
            self?.end()
        }
        self.reader.withLock { $0 = reader }
    }

    deinit {
        reader.withLock { $0?.cancel() }
    }

    /// True once the source ended: a new listener needs a new hub.
    package var hasEnded: Bool { state.withLock { $0.ended } }

    /// A stream of notifications (raw JSON, stamped with the subscription id; nil marks the end)
    /// for `methods` and for updates of `resources`; `resources` lists the URIs the server accepted.
    package func listen(methods: Set<String>, resources requested: [String], subscriptionID: String) async -> (id: Int, stream: AsyncStream<ByteBuffer?>, resources: [String]) {
        // Subscribed at the server before the listener exists, so no update is announced for a
        // URI it then refuses; a URI already subscribed for another listener is just counted.
        var accepted: [String] = []
        for uri in Set(requested).sorted() {
            let first = state.withLock { $0.resources.join(uri) }
            if !first {
                accepted.append(uri)
            } else if await subscriber?(uri, true) == true {
                accepted.append(uri)
            } else {
                state.withLock { _ = $0.resources.leave(uri) }
            }
        }
        let (stream, continuation) = AsyncStream<ByteBuffer?>.makeStream()
        let id: Int = state.withLock { state in
            state.next += 1
            if state.ended {
                continuation.yield(nil)
                continuation.finish()
            } else {
                state.all[state.next] = Listener(methods: methods, resources: Set(accepted), subscriptionID: subscriptionID, continuation: continuation)
            }
            return state.next
        }
        return (id, stream, accepted)
    }

    package func stop(_ id: Int) {
        let (listener, empty, released) = state.withLock { state -> (Listener?, Bool, [String]) in
            guard let listener = state.all.removeValue(forKey: id) else { return (nil, state.all.isEmpty, []) }
            let released = listener.resources.sorted().filter { state.resources.leave($0) }
            return (listener, state.all.isEmpty, released)
        }
        listener?.continuation.finish()
        if let subscriber, !released.isEmpty {
            Task {
                for uri in released { _ = await subscriber(uri, false) }
                if empty { self.reader.withLock { $0?.cancel() } }
            }
        } else if empty {
            reader.withLock { $0?.cancel() }
        }
    }

    private func deliver(_ bytes: ByteBuffer) {
        guard let message = try? JSONRPCMessage(parsing: bytes), let method = message.method, !message.isRequest else { return }
        let uri = method == "notifications/resources/updated" ? message.paramsString("uri") : nil
        let targets = state.withLock { state in
            state.all.values.filter { $0.methods.contains(method) || (uri.map($0.resources.contains) ?? false) }
        }
        for listener in targets {
            listener.continuation.yield(Self.stamped(message, subscriptionID: listener.subscriptionID))
        }
    }

    private func end() {
        let all = state.withLock { state -> [Listener] in
            state.ended = true
            defer { state.all.removeAll() }
            return Array(state.all.values)
        }
        for listener in all {
            listener.continuation.yield(nil)
            listener.continuation.finish()
        }
    }

    /// The notification with `_meta["io.modelcontextprotocol/subscriptionId"]` set.
    package static func stamped(_ message: JSONRPCMessage, subscriptionID: String) -> ByteBuffer {
        guard let id = try? JSONSerialization.jsonObject(with: Data(subscriptionID.utf8), options: [.fragmentsAllowed]) else { return message.bytes }
        return message.editing("params") { params in
            var meta = params["_meta"] as? [String: Any] ?? [:]
            meta[ModernProtocol.metaPrefix + "subscriptionId"] = id
            params["_meta"] = meta
        }?.bytes ?? message.bytes
    }
}

/// Resource subscriptions shared by a server's listeners: the server is asked to subscribe for the
/// first listener of a URI and to unsubscribe after the last one leaves.
package struct SubscriptionCounts: Equatable {
    private var counts: [String: Int] = [:]

    package init() {}

    /// A listener wants `uri`; true when it is the first (ask the server to subscribe).
    package mutating func join(_ uri: String) -> Bool {
        counts[uri, default: 0] += 1
        return counts[uri] == 1
    }

    /// A listener no longer wants `uri` (it left, or the server refused it); true when it was the
    /// last (ask the server to unsubscribe, when it had accepted).
    package mutating func leave(_ uri: String) -> Bool {
        guard let count = counts[uri] else { return false }
        if count <= 1 {
            counts[uri] = nil
            return true
        }
        counts[uri] = count - 1
        return false
    }

    package func listeners(of uri: String) -> Int { counts[uri] ?? 0 }
}
