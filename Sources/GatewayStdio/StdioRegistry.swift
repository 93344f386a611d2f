public import GatewayConfig
public import Logging
public import GatewayMetrics
import Synchronization

/// The session managers of all stdio services. A reload that changes a service starts a new
/// manager for new sessions while the old one keeps serving its sessions until they end.
public final class StdioRegistry: Sendable {
    private let logger: Logger
    private let metrics: GatewayMetrics?
    private let state = Mutex<(current: [String: StdioSessionManager], draining: [StdioSessionManager])>(([:], []))
    private let endedHook = Mutex<(@Sendable (String) async -> Void)?>(nil)

    /// Called with the id of a client session that ended on its own (idle, its child exited), so
    /// its record goes and no other instance takes it over as if its instance had gone.
    public func onSessionEnded(_ hook: @escaping @Sendable (String) async -> Void) {
        endedHook.withLock { $0 = hook }
    }

    func sessionEnded(_ sessionID: String) async {
        guard let hook = endedHook.withLock({ $0 }) else { return }
        await hook(sessionID)
    }

    public init(logger: Logger, metrics: GatewayMetrics? = nil) {
        self.logger = logger
        self.metrics = metrics
    }

    /// The manager for `service`, created (and started) on first use or when its settings changed.
    public func manager(for service: StdioServiceConfiguration) -> StdioSessionManager {
        let (manager, replaced, created) = state.withLock { state -> (StdioSessionManager, StdioSessionManager?, Bool) in
            if let existing = state.current[service.name], existing.service == service {
                return (existing, nil, false)
            }
            let manager = StdioSessionManager(service: service, logger: logger, metrics: metrics)
            manager.registry = self
            let old = state.current[service.name]
            state.current[service.name] = manager
            if let old { state.draining.append(old) }
            state.draining.removeAll { $0.isDrained }
            return (manager, old, true)
        }
        if created { manager.start() }
        replaced?.drain()
        return manager
    }

    /// Finds a session of `serviceName` by id, in the current manager or one being drained.
    public func session(serviceName: String, id: String) -> (StdioSessionManager, LegacySession)? {
        state.withLock { state in
            // The current manager first, then any a reload is draining; no list is built (asked
            // by the fast relay on every request of a session).
            if let manager = state.current[serviceName], let session = manager.session(id: id) { return (manager, session) }
            for manager in state.draining where manager.service.name == serviceName {
                if let session = manager.session(id: id) { return (manager, session) }
            }
            return nil
        }
    }

    public var allManagers: [StdioSessionManager] {
        state.withLock { Array($0.current.values) + $0.draining }
    }

    public func shutdown() async {
        let managers = allManagers
        await withTaskGroup(of: Void.self) { group in
            for manager in managers {
                group.addTask { await manager.shutdown() }
            }
        }
    }
}
