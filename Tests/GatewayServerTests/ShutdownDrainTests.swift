import MCPTransport
import Synchronization
import Testing

/// `ShutdownDrain.runUntilDrained` without I/O: the operation's own end, its error, the drain
/// arriving during it or before it, and the waiting task cancelled.
@Suite struct ShutdownDrainTests {
    struct Failure: Error, Equatable {}

    /// Waits for nothing but the task's cancellation, then throws it (an event, not a clock).
    static func untilCancelled() async throws {
        let (never, _) = AsyncStream<Void>.makeStream()
        for await _ in never {}
        try Task.checkCancellation()
    }

    @Test func anOperationThatEndsItselfWasNotDrained() async throws {
        let drain = ShutdownDrain()
        let ran = Mutex(false)
        #expect(try await drain.runUntilDrained { ran.withLock { $0 = true } } == false)
        #expect(ran.withLock { $0 })
    }

    @Test func anOperationsErrorReachesTheCaller() async {
        let drain = ShutdownDrain()
        await #expect(throws: Failure.self) { try await drain.runUntilDrained { throw Failure() } }
    }

    @Test func theDrainCancelsARunningOperation() async throws {
        let drain = ShutdownDrain()
        let (started, start) = AsyncStream<Void>.makeStream()
        let sawCancellation = Mutex(false)
        async let drained = drain.runUntilDrained {
            start.finish()
            do { try await Self.untilCancelled() } catch { sawCancellation.withLock { $0 = error is CancellationError } }
        }
        for await _ in started {}
        drain.drain()
        #expect(try await drained == true)
        #expect(sawCancellation.withLock { $0 })
    }

    @Test func aDrainThatHasStartedEndsAnOperationAtOnce() async throws {
        let drain = ShutdownDrain()
        drain.drain()
        #expect(try await drain.runUntilDrained { try await Self.untilCancelled() } == true)
    }

    @Test func cancellingTheWaitingTaskCancelsTheOperation() async throws {
        let drain = ShutdownDrain()
        let (started, start) = AsyncStream<Void>.makeStream()
        let waiting = Task {
            try await drain.runUntilDrained {
                start.finish()
                try await Self.untilCancelled()
            }
        }
        for await _ in started {}
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
    }
}
