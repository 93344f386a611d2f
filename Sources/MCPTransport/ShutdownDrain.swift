
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
    /// `consumeWithCancellationOnInboundClose` does.
    package func runUntilDrained(_ operation: () async throws -> Void) async throws -> Bool {
        try await withoutActuallyEscaping(operation) { operation in
            let (barrier, source) = AsyncStream<Void>.makeStream()
            let token = onDrain { source.finish() }
            defer {
                cancel(token)
                source.finish()
            }
            return try await withThrowingTaskGroup(of: Bool.self) { group in
                let transferred = UnsafeTransfer(operation)
                group.addTask {
                    for await _ in barrier {}
                    return !Task.isCancelled
                }
                group.addTask {
                    try await transferred.value()
                    return false
                }
                let drained = try await group.next() ?? false
                source.finish()
                group.cancelAll()
                return drained
            }
        }
    }
}

/// Hands a value the caller will not touch meanwhile to a child task.
private struct UnsafeTransfer<Value>: @unchecked Sendable {
    package let value: Value
    package init(_ value: Value) { self.value = value }
}
