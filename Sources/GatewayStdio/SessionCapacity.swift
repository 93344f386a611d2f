/// The slots of one stdio service, as a value: running sessions, spares waiting for a client,
/// children starting (spares) or initializing (sessions), and how many each caller holds. Its
/// owner (`StdioSessionManager`) keeps it behind a lock, calls one event per step and does what
/// the answer says (spawn, take the spare, end children); tests drive it without processes.
/// Generic over the child so that tests can use plain objects.
package struct SessionCapacity<Child: AnyObject> {
    package enum Refusal: Error, Equatable {
        /// Every slot of the service is taken (503).
        case atCapacity(limit: Int)
        /// The caller already holds its share (429).
        case atUserLimit(limit: Int)
        /// The service is draining or shutting down.
        case draining
    }

    /// Where a new session's child comes from.
    package enum Source {
        case spare(Child)
        case spawn
    }

    package let maxSessions: Int
    package let maxPerRequester: Int
    package let sparesWanted: Int

    package private(set) var sessions: [String: Child] = [:]
    package private(set) var spares: [Child] = []
    /// Spares being started.
    package private(set) var starting = 0
    /// Sessions between `reserve` and `activate`/`initializeFailed`.
    package private(set) var initializing = 0
    package private(set) var draining = false
    private var replenishing = false
    private var byRequester: [String: Int] = [:]
    private var requesterOf: [ObjectIdentifier: String] = [:]

    package init(maxSessions: Int, maxPerRequester: Int, spares: Int) {
        self.maxSessions = maxSessions
        self.maxPerRequester = maxPerRequester
        self.sparesWanted = spares
    }

    /// Children counted against `maxSessions`.
    package var count: Int { sessions.count + spares.count + starting + initializing }

    package var isDrained: Bool { draining && sessions.isEmpty && initializing == 0 }

    package func sessions(of requester: String) -> Int { byRequester[requester] ?? 0 }

    // MARK: starting a session

    /// A slot for a new session of `requester` (nil: the gateway's own child). A full service
    /// says so first; below that, a caller at its own limit is refused. A spare is taken unless
    /// the session needs a fresh child (`fresh`: started with the caller's identity).
    package mutating func reserve(requester: String?, fresh: Bool) throws(Refusal) -> Source {
        if draining { throw .draining }
        if spares.isEmpty || fresh, count >= maxSessions { throw .atCapacity(limit: maxSessions) }
        if let requester, byRequester[requester, default: 0] >= maxPerRequester { throw .atUserLimit(limit: maxPerRequester) }
        initializing += 1
        if let requester { byRequester[requester, default: 0] += 1 }
        if !fresh, let spare = spares.popLast() { return .spare(spare) }
        return .spawn
    }

    /// The child of a `.spawn` reservation could not be started.
    package mutating func spawnFailed(requester: String?) {
        initializing -= 1
        if let requester { forget(requester) }
    }

    /// The reserved slot's child is `child` (counted for `requester` until it ends).
    package mutating func assign(_ child: Child, to requester: String?) {
        if let requester { requesterOf[ObjectIdentifier(child)] = requester }
    }

    /// Initialize failed, timed out, or could not be sent: the slot is free again.
    package mutating func initializeFailed(_ child: Child) {
        initializing -= 1
        release(child)
    }

    /// Initialize succeeded: the session is addressable by `sessionID`.
    package mutating func activate(_ child: Child, sessionID: String) {
        initializing -= 1
        sessions[sessionID] = child
    }

    // MARK: ending

    /// The session `sessionID` ends (DELETE, idle, shutdown): its child, if it was running.
    package mutating func end(sessionID: String) -> Child? {
        guard let child = sessions.removeValue(forKey: sessionID) else { return nil }
        release(child)
        return child
    }

    /// The child process of `child` exited on its own (as session `sessionID`, or as a spare).
    package mutating func childExited(_ child: Child, sessionID: String?) {
        if let sessionID, sessions[sessionID] === child {
            sessions[sessionID] = nil
            release(child)
        }
        spares.removeAll { $0 === child }
    }

    /// The child no longer counts toward its caller's limit.
    package mutating func release(_ child: Child) {
        guard let requester = requesterOf.removeValue(forKey: ObjectIdentifier(child)) else { return }
        forget(requester)
    }

    private mutating func forget(_ requester: String) {
        byRequester[requester, default: 1] -= 1
        if byRequester[requester] ?? 0 <= 0 { byRequester[requester] = nil }
    }

    // MARK: spares

    /// How many spares to start now (within `maxSessions`); zero while a round is under way.
    package mutating func sparesToStart() -> Int {
        guard sparesWanted > 0, !draining, !replenishing else { return 0 }
        let missing = min(sparesWanted - spares.count - starting, maxSessions - count)
        guard missing > 0 else { return 0 }
        starting += missing
        replenishing = true
        return missing
    }

    /// A spare started: kept (true) unless the service drains meanwhile (then end it).
    package mutating func spareStarted(_ child: Child) -> Bool {
        starting -= 1
        guard !draining else { return false }
        spares.append(child)
        return true
    }

    package mutating func spareFailed() {
        starting -= 1
    }

    /// The round of spares started by `sparesToStart` is over.
    package mutating func sparesStarted() {
        replenishing = false
    }

    // MARK: draining

    /// A reload replaced the service: no new sessions; the spares (returned) are to be ended.
    package mutating func drain() -> [Child] {
        draining = true
        defer { spares.removeAll() }
        return spares
    }

    /// Shutdown: every session and spare (returned) is to be ended.
    package mutating func shutdown() -> (sessions: [Child], spares: [Child]) {
        draining = true
        defer {
            sessions.removeAll()
            spares.removeAll()
        }
        return (Array(sessions.values), spares)
    }
}
