import Foundation
package import GatewayConfig
package import MCPTranslation
import MCPMessages
package import NIOCore
import NIOFoundationEssentialsCompat
import Synchronization
import Logging

/// A child serving 2026-07-28 (stateless) requests, initialized by the gateway itself.
package struct PoolChild: Sendable {
    package let session: LegacySession
    /// The child answered `server/discover`: it speaks 2026-07-28 itself and gets requests as they
    /// are. Otherwise it was initialized as a session-based server and is translated for.
    package let modern: Bool
    /// The child's DiscoverResult (modern) or InitializeResult (legacy) as a JSON object.
    package let initializeResult: [String: SendableJSON]
    /// The child's own notifications (list changes) for `subscriptions/listen` streams;
    /// translated children only.
    package let hub: NotificationHub?
}

/// The 2026-07-28 children of one stdio service's settings (one `StdioSessionManager`): per key
/// (an identity, or `shared` with `isolation: shared`) up to `pool.max` children, each request going
/// to the least busy one and a new child starting only when all are busy; plus `pool.min` warm
/// children, initialized ahead and handed to the first identity that needs one.
///
/// The pool belongs to its manager, so a reload that changes the service's settings leaves this
/// pool behind with the old manager (drained) and new requests get children of the new settings.
package final class ModernPool: Sendable {
    private struct Keyed {
        var children: [PoolChild] = []
        var starting: [Task<PoolChild, any Error>] = []
    }

    private struct State {
        var pools: [String: Keyed] = [:]
        var warm: [PoolChild] = []
        var warming = 0
    }

    private enum Decision {
        case use(PoolChild)
        case assign(PoolChild)
        case create
        case wait(Task<PoolChild, any Error>)
    }

    private let state = Mutex(State())
    private let settings: StdioServiceConfiguration.PoolSettings

    package init(settings: StdioServiceConfiguration.PoolSettings) {
        self.settings = settings
    }

    /// A child for `key`, reused, taken from the warm ones or started per the pool settings.
    /// `changed` says whether a warm child was taken or a child started (then the warm set may need
    /// topping up); the common case, reusing a child, touches nothing else.
    package func child(
        key: String, owner: String, create: @escaping @Sendable (_ warm: Bool) async throws -> PoolChild
    ) async throws -> (child: PoolChild, changed: Bool) {
        while true {
            let decision: Decision = state.withLock { state in
                var pool = state.pools[key] ?? Keyed()
                pool.children.removeAll(where: Self.isClosed)
                defer { state.pools[key] = pool }
                state.warm.removeAll(where: Self.isClosed)
                let plan = PoolPlan.choose(
                    loads: pool.children.map(\.session.pendingCount), starting: pool.starting.count, warmAvailable: !state.warm.isEmpty, max: settings.max
                )
                switch plan {
                case .use(let index): return .use(pool.children[index])
                case .takeWarm:
                    guard let taken = state.warm.popLast() else { return .create }
                    pool.children.append(taken)
                    return .assign(taken)
                case .start: return .create
                case .waitForStarting: return pool.starting.first.map(Decision.wait) ?? .create
                }
            }
            switch decision {
            case .use(let child):
                return (child, false)
            case .assign(let child):
                child.session.assign(owner: owner, idleTimeout: settings.idleTimeout, neverIdle: false)
                return (child, true)
            case .wait(let task):
                _ = try? await task.value
            case .create:
                let task = Task { try await create(false) }
                state.withLock { state in state.pools[key, default: Keyed()].starting.append(task) }
                do {
                    let child = try await task.value
                    state.withLock { state in
                        state.pools[key, default: Keyed()].starting.removeAll { $0 == task }
                        state.pools[key, default: Keyed()].children.append(child)
                    }
                    return (child, true)
                } catch {
                    state.withLock { state in state.pools[key, default: Keyed()].starting.removeAll { $0 == task } }
                    throw error
                }
            }
        }
    }

    /// Takes `key`'s pool out (a group's client session ended): its children, for the caller to end.
    package func remove(key: String) -> [PoolChild] {
        state.withLock { state in state.pools.removeValue(forKey: key)?.children ?? [] }
    }

    /// The live child of `key`'s pool whose session id is `sessionID`.
    package func child(key: String, sessionID: String) -> PoolChild? {
        state.withLock { state in
            state.pools[key]?.children.first { child in
                !Self.isClosed(child) && child.session.sessionID == sessionID
            }
        }
    }

    /// How many warm children to start now to reach `pool.min`; they are counted as warming until
    /// ``warmed(_:)`` reports each. Shared children count toward the minimum once assigned;
    /// per-user ones do not (each new identity should find a warm child).
    package func warmChildrenMissing(sharedKey: String?) -> Int {
        state.withLock { state in
            state.warm.removeAll(where: Self.isClosed)
            let assigned = sharedKey.map { state.pools[$0]?.children.count ?? 0 } ?? 0
            let missing = settings.min - state.warm.count - assigned - state.warming
            if missing > 0 { state.warming += missing }
            return max(0, missing)
        }
    }

    /// A warm child started (or failed to: nil).
    package func warmed(_ child: PoolChild?) {
        state.withLock { state in
            state.warming = max(0, state.warming - 1)
            if let child { state.warm.append(child) }
        }
    }

    private static func isClosed(_ child: PoolChild) -> Bool {
        if case .closed = child.session.phase { return true }
        return false
    }
}

/// Which child of a pool serves a request, decided on values (no processes): the least busy child
/// when it is idle or the pool is full; otherwise another child, a warm one if any is waiting.
package enum PoolPlan: Equatable {
    /// The child at this index of the pool's children.
    case use(Int)
    /// Take a warm (initialized, unassigned) child into the pool.
    case takeWarm
    /// Start a new child.
    case start
    /// Every child is busy and the pool is full of children still starting: wait for one.
    case waitForStarting

    /// `loads`: requests in flight per live child; `starting`: children being started.
    package static func choose(loads: [Int], starting: Int, warmAvailable: Bool, max: Int) -> PoolPlan {
        let leastBusy = loads.indices.min { loads[$0] < loads[$1] }
        let size = loads.count + starting
        if let leastBusy, loads[leastBusy] == 0 || size >= max { return .use(leastBusy) }
        if size < max { return warmAvailable ? .takeWarm : .start }
        return .waitForStarting
    }
}

extension StdioSessionManager {
    /// The key of a caller's pool: the subject, or `shared` for a service with `isolation: shared`.
    package func poolKey(subject: String?, scope: String? = nil) -> String {
        let key = service.isolation == .shared ? "shared" : (subject ?? "anonymous")
        return scope.map { key + "\u{0}group-session:" + $0 } ?? key
    }

    /// A child for the caller's pool, reused or started (and the warm children topped up when one
    /// was taken or started). `identity`: the environment for `passIdentity: env` services.
    package func poolChild(subject: String?, scope: String? = nil, identity: [String: String]?) async throws(Failure) -> PoolChild {
        let key = poolKey(subject: subject, scope: scope)
        let owner = "modern:\(key)"
        do {
            let (child, changed) = try await pool.child(key: key, owner: owner) { warm in
                try await self.startPoolChild(owner: owner, identity: identity, warm: warm)
            }
            if changed { keepWarm() }
            return child
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .spawnFailed("\(error)")
        }
    }

    /// The caller's pool child with session id `sessionID`, if it is still alive.
    package func poolChild(subject: String?, scope: String? = nil, sessionID: String) -> PoolChild? {
        pool.child(key: poolKey(subject: subject, scope: scope), sessionID: sessionID)
    }

    /// Ends the children kept for a group's client session `scope` (the client's session ended).
    package func endScope(subject: String?, scope: String) async {
        for child in pool.remove(key: poolKey(subject: subject, scope: scope)) {
            logger.debug("ending a group member's child with the client session", metadata: ["pid": "\(child.session.pid)"])
            await child.session.child.terminate(grace: .milliseconds(500))
        }
    }

    /// Tops the service's warm children up to `pool.min` (started in the background). Services that
    /// pass the caller's identity at spawn have none: a warm child was started before anyone came.
    package func keepWarm() {
        guard service.pool.min > 0, !service.passIdentity else { return }
        let missing = pool.warmChildrenMissing(sharedKey: service.isolation == .shared ? "shared" : nil)
        for _ in 0..<missing {
            Task {
                let child = try? await self.startPoolChild(owner: "modern:warm", identity: nil, warm: true)
                self.pool.warmed(child)
            }
        }
    }

    /// Starts a child and learns its era (2026-07-28 stdio rule): `server/discover` first; a
    /// DiscoverResult naming 2026-07-28 means modern, anything else (an error, another version)
    /// means it is initialized as a session-based server on the same process.
    func startPoolChild(owner: String, identity: [String: String]?, warm: Bool) async throws(Failure) -> PoolChild {
        let probe: JSONRPCMessage
        do { probe = try JSONRPCMessage(parsing: EraRewrite.discoverProbe) } catch { throw .spawnFailed("\(error)") }
        let (session, subscription) = try await beginInitialize(probe, identity: identity)
        let answer = Self.decoded(await session.finalAnswer(of: subscription))
        if let answer, let result = answer["result"] as? [String: Any],
           (result["supportedVersions"] as? [String])?.contains(where: ModernProtocol.versions.contains) == true
        {
            _ = activate(session, protocolVersion: ModernProtocol.versions[0], owner: owner)
            session.assign(owner: owner, idleTimeout: service.pool.idleTimeout, neverIdle: warm)
            return PoolChild(session: session, modern: true, initializeResult: result.mapValues(SendableJSON.init), hub: nil)
        }
        guard answer != nil else {
            let reason = session.closedReason ?? "the MCP server did not answer"
            await abandon(session, reason: "start failed")
            throw .childExited(reason)
        }
        let sessionID = activate(session, protocolVersion: nil, owner: owner)
        let initialized: [String: Any]?
        do {
            let initialize = try session.sendRequests([try JSONRPCMessage(parsing: ModernProtocol.initializeRequest)], timeout: service.startTimeout)
            initialized = Self.decoded(await session.finalAnswer(of: initialize))
        } catch {
            initialized = nil
        }
        guard let result = initialized?["result"] as? [String: Any] else {
            let reason = session.closedReason ?? "the MCP server did not accept initialize"
            await end(sessionID: sessionID, reason: "initialize failed")
            throw .childExited(reason)
        }
        session.assign(owner: owner, idleTimeout: service.pool.idleTimeout, neverIdle: warm)
        // The child's unsolicited notifications go to the hub, never into a request's stream.
        let hub = NotificationHub.following(session) { uri, subscribe in
            let request: [String: Any] = [
                "jsonrpc": "2.0", "id": "mcp-gateway-subscribe", "method": subscribe ? "resources/subscribe" : "resources/unsubscribe", "params": ["uri": uri],
            ]
            guard let data = try? JSONSerialization.data(withJSONObject: request, options: [.withoutEscapingSlashes]), let message = try? JSONRPCMessage(parsing: ByteBuffer(bytes: data)),
                  let subscription = try? session.sendRequests([message], timeout: .seconds(30))
            else { return false }
            return (await session.finalAnswer(of: subscription)).flatMap { try? JSONRPCMessage(parsing: $0) }?.kind == .response
        }
        do {
            try session.sendNotifications([try JSONRPCMessage(parsing: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)])
        } catch {
            await end(sessionID: sessionID, reason: "initialize failed")
            throw .childExited(session.closedReason ?? "the MCP server's process ended")
        }
        return PoolChild(session: session, modern: false, initializeResult: result.mapValues(SendableJSON.init), hub: hub)
    }

    private static func decoded(_ bytes: ByteBuffer?) -> [String: Any]? {
        bytes.flatMap { (try? JSONSerialization.jsonObject(with: Data(buffer: $0))) as? [String: Any] }
    }
}

extension LegacySession {
    /// The final message of a stream the gateway reads itself (its own initialize or discover, a
    /// relayed retry); nil when the stream ended without one.
    package func finalAnswer(of subscription: Subscription) async -> ByteBuffer? {
        defer { readerStopped(subscription) }
        for await item in subscription.items {
            guard case .message(_, let bytes, let isFinal) = item else { return nil }
            if isFinal { return bytes }
        }
        return nil
    }
}

extension NotificationHub {
    /// A hub fed by a stdio child's standalone stream (ended at once when it cannot be attached).
    package static func following(_ session: LegacySession, subscriber: ResourceSubscriber? = nil) -> NotificationHub {
        guard let subscription = try? session.attachStream(lastEventID: nil) else { return NotificationHub(ended: ()) }
        let items = IteratorBox(subscription.items.makeAsyncIterator())
        return NotificationHub(following: {
            guard case .message(_, let bytes, _)? = await items.next() else { return nil }
            return bytes
        }, subscriber: subscriber)
    }
}

