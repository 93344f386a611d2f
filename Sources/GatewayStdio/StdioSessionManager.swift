public import Foundation
public import GatewayConfig
public import Logging
public import GatewayMetrics
public import MCPMessages
import MCPTransport
import AsyncHTTPClient
public import NIOCore
public import NIOPosix
import Synchronization

/// The sessions of one stdio service: one child process per MCP session, spares started ahead of
/// demand, a cap on children, idle reaping, and clean endings (crash, DELETE, shutdown).
public final class StdioSessionManager: Sendable {
    public enum Failure: Error, Sendable {
        case atCapacity(limit: Int)
        /// The caller already holds `maxSessionsPerUser` sessions of this service.
        case atUserLimit(limit: Int)
        case spawnFailed(String)
        case childExited(String)
        case shuttingDown
    }

    public let service: StdioServiceConfiguration
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    let replayLimit: Int
    let metrics: GatewayMetrics?
    let baseEnvironment: [String: String]
    /// Slots, spares and per-caller counts (`SessionCapacity`), behind a lock.
    private let state: Mutex<SessionCapacity<LegacySession>>
    private let maintenance = Mutex<Task<Void, Never>?>(nil)
    private let modernOnly = Atomic<Bool>(false)
    /// Told when a client session ends on its own (set by the registry that made this manager).
    private let owningRegistry = Mutex<StdioRegistry?>(nil)
    var registry: StdioRegistry? {
        get { owningRegistry.withLock { $0 } }
        set { owningRegistry.withLock { $0 = newValue } }
    }
    /// The children serving 2026-07-28 requests with these settings (see ``ModernPool``).
    package let pool: ModernPool

    /// Set once a child of these settings refused `initialize` as a 2026-07-28-only server: later
    /// children are started with `server/discover` instead.
    public var speaksOnly2026: Bool { modernOnly.load(ordering: .relaxed) }

    /// A child refused `initialize` as a 2026-07-28-only server (logged once).
    public func noteSpeaksOnly2026() {
        guard !modernOnly.exchange(true, ordering: .relaxed) else { return }
        logger.info("the MCP server speaks 2026-07-28 only: its children are started with server/discover from now on")
    }

    public init(
        service: StdioServiceConfiguration, logger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        replayLimit: Int = 512, environment: [String: String] = ProcessInfo.processInfo.environment, metrics: GatewayMetrics? = nil
    ) {
        self.metrics = metrics
        self.service = service
        self.state = Mutex(SessionCapacity(maxSessions: service.maxSessions, maxPerRequester: service.maxSessionsPerUser, spares: service.spares))
        self.pool = ModernPool(settings: service.pool)
        var logger = logger
        logger[metadataKey: "service"] = "\(service.name)"
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.replayLimit = replayLimit
        // Children get the configured environment on top of a minimal base, never the gateway's
        // own environment (which holds its secrets).
        var base: [String: String] = [:]
        for key in ["PATH", "HOME", "LANG"] { base[key] = environment[key] }
        if base["PATH"] == nil { base["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        self.baseEnvironment = base
    }

    /// Starts background upkeep (spares, idle reaping).
    public func start() {
        let interval = Duration.milliseconds(max(100, min(5000, Int64(service.idleTimeout.timeInterval * 1000 / 4))))
        let task = Task { [weak self] in
            self?.replenishSpares()
            while !Task.isCancelled {
                guard (try? await Task.sleep(for: interval)) != nil, let self else { return }
                await self.reapIdleSessions()
            }
        }
        maintenance.withLock { $0 = task }
    }

    public var sessionCount: Int { state.withLock { $0.sessions.count } }

    /// The ids of the client sessions this manager holds (pool children excluded).
    public var sessionIDs: [String] {
        let sessions = state.withLock { Array($0.sessions) }
        return sessions.filter { $0.value.owner?.hasPrefix("modern:") != true }.map(\.key)
    }

    /// Requests sent to this manager's children and not answered yet.
    public var pendingRequests: Int {
        let sessions = state.withLock { Array($0.sessions.values) }
        return sessions.reduce(0) { $0 + $1.pendingCount }
    }

    /// Children by what they do: serving a client's session, serving 2026-07-28 requests from the
    /// pool (warm ones included), or spare (started ahead for the next session).
    public var childCounts: (sessions: Int, pool: Int, spares: Int) {
        let (children, spares) = state.withLock { (Array($0.sessions.values), $0.spares.count) }
        // Owners are read outside the manager's lock: a session's lock is never taken inside it.
        let pool = children.filter { $0.owner?.hasPrefix("modern:") == true }.count
        return (children.count - pool, pool, spares)
    }
    public var spareCount: Int { state.withLock { $0.spares.count } }
    public var childPIDs: [Int32] {
        state.withLock { state in state.sessions.values.map(\.pid) + state.spares.map(\.pid) }
    }

    public func session(id: String) -> LegacySession? {
        state.withLock { $0.sessions[id] }
    }

    // MARK: initialize

    /// Starts a session: takes a spare child or spawns one, forwards `initialize`, and waits (up
    /// to `startTimeout`) for the child's first message. The caller answers the client and calls
    /// ``activate`` or ``abandon`` depending on the result.
    /// `identity` (environment variables) is set at spawn for services with `passIdentity: env`;
    /// such sessions never take a spare, which was started before anyone signed in.
    /// `requester` (the caller, for `maxSessionsPerUser`) is nil for the gateway's own children.
    public func beginInitialize(_ message: JSONRPCMessage, identity: [String: String]? = nil, requester: String? = nil) async throws(Failure) -> (LegacySession, LegacySession.Subscription) {
        let source: SessionCapacity<LegacySession>.Source
        do {
            source = try state.withLock { state throws(SessionCapacity<LegacySession>.Refusal) in
                try state.reserve(requester: requester, fresh: identity != nil)
            }
        } catch {
            switch error {
            case .draining: throw .shuttingDown
            case .atCapacity(let limit): throw .atCapacity(limit: limit)
            case .atUserLimit(let limit): throw .atUserLimit(limit: limit)
            }
        }
        replenishSpares()
        let session: LegacySession
        switch source {
        case .spare(let spare):
            session = spare
        case .spawn:
            do {
                session = try await spawnChild(identity: identity ?? [:])
            } catch {
                state.withLock { $0.spawnFailed(requester: requester) }
                throw error
            }
        }
        state.withLock { $0.assign(session, to: requester) }
        session.markInitializing()
        let subscription: LegacySession.Subscription
        do {
            // initialize is bounded by startTimeout (below), not requestTimeout.
            subscription = try session.sendRequests([message], timeout: nil)
        } catch {
            state.withLock { $0.initializeFailed(session) }
            throw .childExited(error.reason)
        }
        // The child has startTimeout to answer; after that it is killed and the waiting request
        // gets an error (the stream ends with it).
        let timeout = service.startTimeout
        let timer = Task { [logger] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            if session.phase == .initializing {
                logger.error("child did not answer initialize in time; killing it", metadata: ["timeout": "\(timeout)", "pid": "\(session.pid)"])
                session.close(reason: "the MCP server did not answer initialize within \(timeout)", errorData: nil, ending: .startTimeout)
                session.child.signal(SIGKILL)
            }
        }
        // Cancelled when the session activates or closes: no sleeping task per session start.
        session.armStartTimer(timer)
        return (session, subscription)
    }

    /// The child answered initialize successfully: the session becomes addressable by a new
    /// session id, or by `resuming` (a session taken over from an instance that is gone).
    public func activate(_ session: LegacySession, protocolVersion: String?, owner: String?, resuming: String? = nil) -> String {
        let sessionID = resuming ?? Self.mintSessionID()
        session.activate(sessionID: sessionID, protocolVersion: protocolVersion, owner: owner)
        state.withLock { $0.activate(session, sessionID: sessionID) }
        logger.info(resuming == nil ? "session started" : "session re-established", metadata: ["session": "\(MCPSessionID.logged(sessionID))", "pid": "\(session.pid)", "protocolVersion": "\(protocolVersion ?? "?")"])
        return sessionID
    }

    /// Initialize failed or timed out: the child is ended and its slot freed.
    public func abandon(_ session: LegacySession, reason: String) async {
        state.withLock { $0.initializeFailed(session) }
        session.close(reason: reason, errorData: nil)
        await session.child.terminate(grace: .milliseconds(200))
    }

    // MARK: ending sessions

    /// DELETE, idle timeout or shutdown: closes the session and ends its child gracefully.
    public func end(sessionID: String, reason: String) async {
        guard let session = state.withLock({ $0.end(sessionID: sessionID) }) else { return }
        await end(session, reason: reason)
    }

    private func end(_ session: LegacySession, reason: String) async {
        state.withLock { $0.release(session) }
        session.close(reason: "session ended: \(reason)", errorData: nil)
        let exit = await session.child.terminate(grace: service.shutdownGrace)
        logger.info("session ended", metadata: ["session": "\(session.sessionID == nil ? "spare" : MCPSessionID.logged(session.sessionID))", "reason": "\(reason)", "pid": "\(session.pid)", "exit": "\(exit)"])
        replenishSpares()
    }

    func reapIdleSessions() async {
        let now = ContinuousClock.now
        let idle = state.withLock { state in
            state.sessions.filter { $0.value.isIdle(now: now, defaultTimeout: service.idleTimeout) }.map { ($0.key, $0.value.idleTimeout ?? service.idleTimeout) }
        }
        for (sessionID, timeout) in idle {
            await end(sessionID: sessionID, reason: "idle for \(timeout)")
            await registry?.sessionEnded(sessionID)
        }
    }

    /// Ends every session and spare; used at shutdown and when a reload replaced this service.
    public func shutdown() async {
        maintenance.withLock { $0?.cancel() }
        let (sessions, spares) = state.withLock { $0.shutdown() }
        await withTaskGroup(of: Void.self) { group in
            for session in sessions {
                group.addTask { await self.end(session, reason: "gateway shutting down") }
            }
            for spare in spares {
                group.addTask {
                    spare.close(reason: "gateway shutting down", errorData: nil)
                    await spare.child.terminate(grace: .milliseconds(500))
                }
            }
        }
    }

    /// Stops taking new sessions (a reload replaced the service) but serves existing ones.
    /// Warm 2026-07-28 pool children (never assigned to anyone) end too: nobody will take them.
    public func drain() {
        let (spares, warm) = state.withLock { state in
            (state.drain(), state.sessions.filter { $0.value.isWarm })
        }
        for spare in spares {
            spare.close(reason: "service reconfigured", errorData: nil)
            Task { await spare.child.terminate(grace: .milliseconds(500)) }
        }
        for (sessionID, _) in warm {
            Task { await self.end(sessionID: sessionID, reason: "service reconfigured") }
        }
    }

    public var isDrained: Bool { state.withLock { $0.isDrained } }

    // MARK: children

    private func spawnChild(identity: [String: String] = [:]) async throws(Failure) -> LegacySession {
        var environment = baseEnvironment
        for (key, value) in service.env { environment[key] = value }
        for (key, value) in identity { environment[key] = value }
        let box = SessionBox()
        let childLogger = logger
        let child: any MessagePeer
        if let remote = service.sse {
            // A server speaking only the 2024-11-05 HTTP+SSE transport: one connection per "child".
            do {
                child = try await SSEUpstreamPeer.connect(
                    remote, http: HTTPClient.shared, eventLoop: eventLoopGroup.next(), timeout: service.startTimeout, logger: childLogger,
                    onMessage: { message in box.session?.handleChildLine(message) }
                )
            } catch {
                logger.error("cannot connect to the SSE server", metadata: ["error": "\(error)"])
                metrics?.stdioSpawnFailure(service: service.name)
                throw .spawnFailed("\(error)")
            }
        } else {
            let options = ChildProcess.Options(command: service.command, arguments: service.args, environment: environment, workingDirectory: service.cwd)
            let stderrRelay = StderrRelay(logger: childLogger)
            do {
                child = try await ChildProcess.spawn(
                    options, eventLoop: eventLoopGroup.next(), logger: childLogger,
                    onLine: { line in box.session?.handleChildLine(line) },
                    onStderr: { line in stderrRelay.relay(line) }
                )
            } catch {
                logger.error("cannot start child", metadata: ["error": "\(error)"])
                metrics?.stdioSpawnFailure(service: service.name)
                throw .spawnFailed("\(error)")
            }
        }
        var sessionLogger = logger
        sessionLogger[metadataKey: "pid"] = "\(child.pid)"
        let session = LegacySession(child: child, serviceName: service.name, replayLimit: replayLimit, logger: sessionLogger)
        box.session = session
        child.exit.whenSuccess { [weak self] exit in
            self?.childExited(session, exit: exit)
        }
        return session
    }

    private func childExited(_ session: LegacySession, exit: ChildExit) {
        let reason = "service \(service.name): the MCP server process ended (\(exit))"
        let data: String
        switch exit {
        case .exited(let code): data = "{\"exitStatus\":\(code)}"
        case .signaled(let signal): data = "{\"signal\":\(signal)}"
        }
        let unexpected = session.close(reason: reason, errorData: data, ending: .childExited(exit))
        state.withLock { $0.childExited(session, sessionID: session.sessionID) }
        if unexpected {
            logger.error("child exited", metadata: ["session": "\(MCPSessionID.logged(session.sessionID))", "pid": "\(session.pid)", "exit": "\(exit)"])
            replenishSpares()
            if let sessionID = session.sessionID, let registry { Task { await registry.sessionEnded(sessionID) } }
        }
    }

    /// Keeps `spares` children started and waiting, within `maxSessions`.
    func replenishSpares() {
        let needed = state.withLock { $0.sparesToStart() }
        guard needed > 0 else { return }
        Task {
            var failures = 0
            for _ in 0..<needed {
                do {
                    let spare = try await self.spawnChild()
                    let keep = self.state.withLock { $0.spareStarted(spare) }
                    if !keep { await spare.child.terminate(grace: .milliseconds(200)) }
                } catch {
                    failures += 1
                    self.state.withLock { $0.spareFailed() }
                }
            }
            self.state.withLock { $0.sparesStarted() }
            if failures > 0 {
                // Do not spin on a command that cannot start; the next session retries.
                self.logger.warning("spare children failed to start", metadata: ["failures": "\(failures)"])
            }
        }
    }

    /// A fresh session id (see `MCPSessionID`).
    public static func mintSessionID() -> String { MCPSessionID.mint() }
}

private final class SessionBox: @unchecked Sendable {
    // Set right after spawn. A line the child prints before that (unprompted start-up output)
    // finds no session and is dropped; it cannot be a response, as nothing was sent yet.
    private let lock = Mutex<LegacySession?>(nil)
    var session: LegacySession? {
        get { lock.withLock { $0 } }
        set { lock.withLock { $0 = newValue } }
    }
}
