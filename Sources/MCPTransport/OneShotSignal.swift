import Synchronization

/// Callbacks run once when something happens (a client hanging up, a drain starting); one
/// registered after it happened runs at once.
package final class OneShotSignal: Sendable {
    private struct State {
        var fired = false
        var nextToken = 0
        var callbacks: [Int: @Sendable () -> Void] = [:]
    }

    private let state = Mutex(State())

    /// Registers `callback`; returns a token for ``cancel(_:)`` (nil when it already ran).
    package func onFire(_ callback: @escaping @Sendable () -> Void) -> Int? {
        let token = state.withLock { state -> Int? in
            guard !state.fired else { return nil }
            state.nextToken += 1
            state.callbacks[state.nextToken] = callback
            return state.nextToken
        }
        if token == nil { callback() }
        return token
    }

    package func cancel(_ token: Int?) {
        guard let token else { return }
        _ = state.withLock { $0.callbacks.removeValue(forKey: token) }
    }

    package func fire() {
        let callbacks = state.withLock { state -> [@Sendable () -> Void] in
            state.fired = true
            defer { state.callbacks.removeAll() }
            return Array(state.callbacks.values)
        }
        callbacks.forEach { $0() }
    }
}
