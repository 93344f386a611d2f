public import GatewayStore
public import Logging
import Foundation
import Synchronization

/// The instances sharing one store. Each registers itself under `instance:<id>` with a heartbeat
/// (the key's TTL is `heartbeatTimeout`, pushed forward three times per timeout); an instance
/// whose key has expired is gone, and the sessions it held may be taken over by any other.
///
/// An instance id is random per process: a restarted instance is a new one, and its previous
/// self's sessions are taken over like those of any instance that went away.
public final class ClusterMembership: Sendable {
    /// Where a session's instance is, as seen from this one.
    public enum Placement: Sendable, Equatable {
        /// This process.
        case here
        /// Another instance that is alive and serving; `url` is its `advertiseURL` (nil when it
        /// was started without `cluster:` and cannot be reached).
        case live(url: String?)
        /// Another instance that is alive but stopping: its sessions are taken over by the next
        /// request that needs their child, while answers for what its children still run go to it.
        case draining(url: String?)
        /// No such instance (heartbeat lapsed, or the session was released).
        case gone
    }

    /// One instance's record in the store.
    struct Record: Codable, Equatable {
        var url: String?
        var state: String
        var started: Int
    }

    public let instanceID: String
    public let advertiseURL: String?
    public let heartbeatTimeout: Duration
    private let store: any KeyValueStore
    private let logger: Logger
    private let now: @Sendable () -> ContinuousClock.Instant
    private let draining = Atomic<Bool>(false)
    /// Whether a missing heartbeat can be believed (see ``StoreContinuity``).
    private let continuity = Mutex(StoreContinuity())
    private let started = Int(Date().timeIntervalSince1970)
    /// Recent answers about other instances, so a burst of requests asks the store once.
    private let cache = Mutex<[String: (Placement, ContinuousClock.Instant)]>([:])
    private static let cacheLifetime: Duration = .seconds(1)
    /// The longest a store client waits before reconnecting (`RedisConnection`'s backoff cap): an
    /// instance's first heartbeat after the store returns can be that late.
    static let storeReconnectWait: Duration = .seconds(2)
    static let indexKey = "instances"

    public init(
        store: any KeyValueStore, advertiseURL: String?, heartbeatTimeout: Duration = .seconds(10), instanceID: String = ProcessInstance.id,
        logger: Logger, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.store = store
        self.now = now
        self.advertiseURL = advertiseURL
        self.heartbeatTimeout = heartbeatTimeout
        self.instanceID = instanceID
        var logger = logger
        logger[metadataKey: "instance"] = "\(instanceID)"
        self.logger = logger
    }

    static func key(_ instance: String) -> String { "instance:\(instance)" }

    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// Writes this instance's record (again); false when the store cannot be reached.
    @discardableResult
    public func heartbeat() async -> Bool {
        let record = Record(url: advertiseURL, state: isDraining ? "draining" : "serving", started: started)
        guard let bytes = try? JSONEncoder().encode(record) else { return false }
        do {
            try await store.set(Self.key(instanceID), Array(bytes), ttl: heartbeatTimeout)
            try await store.addToSet(Self.indexKey, [instanceID], ttl: nil)
            let now = now()
            continuity.withLock { $0.reached(at: now) }
            return true
        } catch {
            continuity.withLock { $0.failed() }
            return false
        }
    }

    /// Beats until cancelled, three times per `heartbeatTimeout`, and every quarter second while
    /// the store cannot be reached (so this instance is registered again as soon as it is back);
    /// a store that cannot be reached is logged once until it can again.
    public func run() async {
        let interval = heartbeatTimeout / 3
        var failing = false
        while !Task.isCancelled {
            let ok = await heartbeat()
            if ok == failing {
                if ok { logger.info("cluster heartbeat written again") } else { logger.error("cluster heartbeat cannot be written: the store is unreachable; other instances will take this one's sessions over after \(heartbeatTimeout)") }
                failing = !ok
            }
            guard (try? await Task.sleep(for: ok ? interval : min(interval, .milliseconds(250)))) != nil else { return }
        }
    }

    /// Stopping: other instances take this one's sessions over from now on, rather than forwarding
    /// requests to it.
    public func markDraining() async {
        guard !draining.exchange(true, ordering: .relaxed) else { return }
        await heartbeat()
    }

    /// Gone for good (end of a graceful shutdown).
    public func leave() async {
        _ = try? await store.delete([Self.key(instanceID)])
        try? await store.removeFromSet(Self.indexKey, [instanceID])
    }

    /// Where `instance` is; nil (a session no instance holds) is `.gone`.
    public func placement(of instance: String?) async throws(StoreError) -> Placement {
        guard let instance else { return .gone }
        if instance == instanceID { return .here }
        let now = now()
        if let (placement, seen) = cache.withLock({ $0[instance] }), now - seen < Self.cacheLifetime { return placement }
        let placement: Placement
        let stored: [UInt8]?
        do { stored = try await store.get(Self.key(instance)) } catch {
            continuity.withLock { $0.failed() }
            throw error
        }
        if let bytes = stored, let record = try? JSONDecoder().decode(Record.self, from: Data(bytes)) {
            placement = record.state == "draining" ? .draining(url: record.url) : .live(url: record.url)
        } else {
            // Just after the store was away, every instance's heartbeat has lapsed in it: a live
            // instance is registered again only at its next beat. Taken for gone now, its sessions
            // would be taken over while it still serves them (two children for one session).
            let window = heartbeatTimeout + Self.storeReconnectWait
            guard continuity.withLock({ $0.missingHeartbeatIsConclusive(now: now, window: window) }) else {
                throw .unavailable("the store was unreachable until recently: whether instance \(instance) is gone is known once its heartbeat had time to be written again")
            }
            placement = .gone
        }
        cache.withLock { cache in
            if cache.count > 1000 { cache.removeAll() }
            cache[instance] = (placement, now)
        }
        return placement
    }

    /// What a forward to `instance` learned: it could not be connected to (gone), or it said it
    /// is stopping (draining, still reachable at `url` for what its children are finishing).
    public func learned(_ instance: String, _ placement: Placement) {
        cache.withLock { $0[instance] = .some((placement, ContinuousClock.now)) }
    }

    /// Another serving instance that can be reached (for new sessions while this one drains).
    public func servingPeer() async -> (id: String, url: String)? {
        guard let members = try? await store.setMembers(Self.indexKey) else { return nil }
        var gone: [String] = []
        for member in members.shuffled() where member != instanceID {
            switch try? await placement(of: member) {
            case .live(let url?): return (member, url)
            case .gone: gone.append(member)
            default: continue
            }
        }
        if !gone.isEmpty { try? await store.removeFromSet(Self.indexKey, gone) }
        return nil
    }
}

/// What this instance saw of the store, deciding whether another instance's missing heartbeat
/// means it is gone. A heartbeat lapses in the store while the store is away, for live instances
/// too; it is conclusive only once the store has been reachable again for a whole heartbeat
/// timeout (plus the store client's reconnect wait), since every live instance has written its
/// heartbeat again by then. An instance that has always reached the store believes it at once.
struct StoreContinuity: Equatable {
    private(set) var failing = false
    private(set) var recovered: ContinuousClock.Instant?

    mutating func failed() {
        failing = true
    }

    /// This instance's own heartbeat was written at `now`.
    mutating func reached(at now: ContinuousClock.Instant) {
        guard failing else { return }
        failing = false
        recovered = now
    }

    func missingHeartbeatIsConclusive(now: ContinuousClock.Instant, window: Duration) -> Bool {
        guard !failing else { return false }
        guard let recovered else { return true }
        return now - recovered >= window
    }
}
