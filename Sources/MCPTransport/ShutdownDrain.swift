import Synchronization

/// Ends the streams that would otherwise hold a graceful shutdown open until its deadline: a
/// standalone GET event stream has no request to finish, and its client reconnects (to another
/// instance, or to this one after a restart) with `Last-Event-ID`. Requests still being answered
/// keep the shutdown's grace period.
package final class ShutdownDrain: Sendable {
    private let started = OneShotSignal()

    package init() {}

    /// Calls `callback` once when the drain starts (at once if it has). Returns a token for
    /// ``cancel(_:)``.
    package func onDrain(_ callback: @escaping @Sendable () -> Void) -> Int? {
        started.onFire(callback)
    }

    package func cancel(_ token: Int?) {
        started.cancel(token)
    }

    package func drain() {
        started.fire()
    }

    /// Runs `operation` until it returns or the drain starts (then it is cancelled); true when the
    /// drain ended it. `operation` runs in a child task while the caller waits, so it may use the
    /// caller's non-Sendable state (a response body writer), as Hummingbird's own
    /// `consumeWithCancellationOnInboundClose` does. One child task, not a second one waiting for
    /// the drain: a held stream keeps every task of its own for its whole life
    /// (bench/results-connections.md).
    package func runUntilDrained(_ operation: () async throws -> Void) async throws -> Bool {
        try await withoutActuallyEscaping(operation) { operation in
            try await withThrowingTaskGroup(of: Void.self) { group in
                let first = FirstOutcome()
                let transferred = UnsafeTransfer(operation)
                group.addTask {
                    defer { first.settle(drained: false) }
                    try await transferred.value()
                }
                let token = onDrain { first.settle(drained: true) }
                defer { cancel(token) }
                let drained = await first.value()
                if drained {
                    // What the cancelled operation throws is the drain's doing, not an error.
                    group.cancelAll()
                    return true
                }
                try await group.waitForAll()
                return false
            }
        }
    }
}

/// Which came first: the operation's end or the drain (or the waiting task's cancellation, which
/// counts as the operation's end: the cancelled operation ends too).
private final class FirstOutcome: Sendable {
    private struct State {
        var drained: Bool?
        var waiter: CheckedContinuation<Bool, Never>?
    }

    private let state = Mutex(State())

    func settle(drained: Bool) {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            guard state.drained == nil else { return nil }
            state.drained = drained
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: drained)
    }

    func value() async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let settled = state.withLock { state -> Bool? in
                    if let drained = state.drained { return drained }
                    state.waiter = continuation
                    return nil
                }
                if let settled { continuation.resume(returning: settled) }
            }
        } onCancel: {
            settle(drained: false)
        }
    }
}

/// Hands a value the caller will not touch meanwhile to a child task.
private struct UnsafeTransfer<Value>: @unchecked Sendable {
    package let value: Value
    package init(_ value: Value) { self.value = value }
}
