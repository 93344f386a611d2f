import GatewayStdio
import Testing

/// The slots of a stdio service on values: no process is started.
@Suite struct SessionCapacityTests {
    final class Child {}
    typealias Capacity = SessionCapacity<Child>

    @Test func aFullServiceRefusesBeforeAPerUserLimit() throws {
        var capacity = Capacity(maxSessions: 2, maxPerRequester: 1, spares: 0)
        guard case .spawn = try capacity.reserve(requester: "alice", fresh: false) else {
            Issue.record("expected a spawn")
            return
        }
        // Alice is at her own limit: 429, not 503.
        #expect(throws: Capacity.Refusal.atUserLimit(limit: 1)) { try capacity.reserve(requester: "alice", fresh: false) }
        _ = try capacity.reserve(requester: "bob", fresh: false)
        #expect(capacity.count == 2 && capacity.initializing == 2)
        // Full: everyone hears so first.
        #expect(throws: Capacity.Refusal.atCapacity(limit: 2)) { try capacity.reserve(requester: "carol", fresh: false) }
        #expect(throws: Capacity.Refusal.atCapacity(limit: 2)) { try capacity.reserve(requester: "alice", fresh: false) }
    }

    @Test func aSlotComesBackWhenStartingFailsOrTheSessionEnds() throws {
        var capacity = Capacity(maxSessions: 1, maxPerRequester: 1, spares: 0)
        _ = try capacity.reserve(requester: "alice", fresh: false)
        capacity.spawnFailed(requester: "alice")
        #expect(capacity.count == 0 && capacity.sessions(of: "alice") == 0)

        _ = try capacity.reserve(requester: "alice", fresh: false)
        let child = Child()
        capacity.assign(child, to: "alice")
        capacity.initializeFailed(child)
        #expect(capacity.count == 0 && capacity.sessions(of: "alice") == 0)

        _ = try capacity.reserve(requester: "alice", fresh: false)
        let running = Child()
        capacity.assign(running, to: "alice")
        capacity.activate(running, sessionID: "s1")
        #expect(capacity.sessions.count == 1 && capacity.initializing == 0 && capacity.sessions(of: "alice") == 1)
        let ended = capacity.end(sessionID: "s1")
        let endedAgain = capacity.end(sessionID: "s1")
        #expect(ended === running)
        #expect(endedAgain == nil)
        #expect(capacity.count == 0 && capacity.sessions(of: "alice") == 0)
    }

    @Test func aCrashedChildFreesItsSlotOnce() throws {
        var capacity = Capacity(maxSessions: 1, maxPerRequester: 1, spares: 0)
        _ = try capacity.reserve(requester: "alice", fresh: false)
        let child = Child()
        capacity.assign(child, to: "alice")
        capacity.activate(child, sessionID: "s1")
        capacity.childExited(child, sessionID: "s1")
        #expect(capacity.count == 0 && capacity.sessions(of: "alice") == 0)
        // A stale exit for an id now held by another child changes nothing.
        _ = try capacity.reserve(requester: "bob", fresh: false)
        let other = Child()
        capacity.assign(other, to: "bob")
        capacity.activate(other, sessionID: "s1")
        capacity.childExited(child, sessionID: "s1")
        #expect(capacity.sessions["s1"] === other && capacity.sessions(of: "bob") == 1)
    }

    @Test func sparesAreStartedWithinTheLimitAndTakenUnlessAFreshChildIsNeeded() throws {
        var capacity = Capacity(maxSessions: 3, maxPerRequester: 3, spares: 2)
        let round = capacity.sparesToStart()
        // One round at a time.
        let overlapping = capacity.sparesToStart()
        #expect(round == 2 && overlapping == 0)
        let (first, second) = (Child(), Child())
        let keptFirst = capacity.spareStarted(first)
        let keptSecond = capacity.spareStarted(second)
        #expect(keptFirst && keptSecond)
        capacity.sparesStarted()
        #expect(capacity.spares.count == 2 && capacity.count == 2)
        // A session with the caller's identity needs its own child, and there is room for one.
        guard case .spawn = try capacity.reserve(requester: "alice", fresh: true) else {
            Issue.record("an identity session must not take a spare")
            return
        }
        // Now full (2 spares + 1 initializing): a fresh child no longer fits, a spare still does.
        #expect(throws: Capacity.Refusal.atCapacity(limit: 3)) { try capacity.reserve(requester: "bob", fresh: true) }
        guard case .spare(let taken) = try capacity.reserve(requester: "bob", fresh: false) else {
            Issue.record("expected a spare")
            return
        }
        #expect(taken === second)
        #expect(capacity.spares.count == 1)
    }

    @Test func drainingStopsNewSessionsAndEndsSpares() throws {
        var capacity = Capacity(maxSessions: 4, maxPerRequester: 4, spares: 1)
        let round = capacity.sparesToStart()
        #expect(round == 1)
        let spare = Child()
        _ = capacity.spareStarted(spare)
        capacity.sparesStarted()
        _ = try capacity.reserve(requester: nil, fresh: true)
        let running = Child()
        capacity.activate(running, sessionID: "s1")
        let drained = capacity.drain()
        #expect(drained.map(ObjectIdentifier.init) == [ObjectIdentifier(spare)])
        #expect(throws: Capacity.Refusal.draining) { try capacity.reserve(requester: "alice", fresh: false) }
        let afterDrain = capacity.sparesToStart()
        #expect(afterDrain == 0)
        #expect(!capacity.isDrained)
        _ = capacity.end(sessionID: "s1")
        #expect(capacity.isDrained)
        let (sessions, spares) = capacity.shutdown()
        #expect(sessions.isEmpty && spares.isEmpty)
    }
}
