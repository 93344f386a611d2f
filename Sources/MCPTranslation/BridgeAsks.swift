import NIOFoundationEssentialsCompat
import Foundation
package import MCPMessages
package import NIOCore
import Synchronization

/// The messages a 2026-07-28 server sends for one request: interim ones (progress, logs), then its
/// answer (`final`); nil when it ended without one.
package typealias BridgedMessages = @Sendable () async -> (bytes: ByteBuffer, final: Bool)?
/// Sends one request (or a retry) to a 2026-07-28 server; nil when it cannot be reached.
package typealias BridgedExchange = @Sendable (JSONRPCMessage) async -> BridgedMessages?

/// Asks relayed to session-based clients on behalf of 2026-07-28 children, waiting for the
/// client's answer (a JSON-RPC response POSTed in its session).
package final class BridgeAsks: Sendable {
    private let waiting = Mutex<[String: (continuation: AsyncStream<ByteBuffer?>.Continuation, timer: Task<Void, Never>)]>([:])

    package init() {}

    /// Registers interest in the answer to `askID` before the ask is sent (so a fast answer is
    /// never missed); the returned stream yields the answer, or nil after `timeout`. The timer
    /// ends with the wait: an answered ask leaves no sleeping task behind.
    package func expect(session: String, askID: String, timeout: Duration) -> AsyncStream<ByteBuffer?> {
        let key = "\(session)\u{0}\(askID)"
        let (stream, continuation) = AsyncStream<ByteBuffer?>.makeStream()
        let timer = Task { [weak self] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            self?.finish(key, with: nil)
        }
        waiting.withLock { $0[key] = (continuation, timer) }
        return stream
    }

    /// True when `answer` was the response an ask waited for (then it is consumed here).
    package func resume(session: String, answer: JSONRPCMessage) -> Bool {
        guard answer.isResponse, let id = answer.rawID else { return false }
        return finish("\(session)\u{0}\(id)", with: answer.bytes)
    }

    @discardableResult
    private func finish(_ key: String, with value: ByteBuffer?) -> Bool {
        guard let (continuation, timer) = waiting.withLock({ $0.removeValue(forKey: key) }) else { return false }
        timer.cancel()
        continuation.yield(value)
        continuation.finish()
        return true
    }
}
