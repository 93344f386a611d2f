import NIOFoundationEssentialsCompat
import AuthorizationServer
import Foundation
import MCPMessages
import NIOCore
import Synchronization

/// Requests parked while a 2026-07-28 client answers an ask (Multi Round-Trip Requests): the
/// `requestState` handed to the client is an unguessable handle, bound to the identity it was
/// issued to and valid for a few minutes; the original request keeps running meanwhile.
package final class ParkedRequests<Value: Sendable>: Sendable {
    private struct Parked {
        package let value: Value
        package let owner: String
        package let expires: ContinuousClock.Instant
    }

    package static var lifetime: Duration { .seconds(300) }
    private let parked = Mutex<[String: Parked]>([:])

    package init() {}

    package func park(_ value: Value, owner: String) -> String {
        let token = ClientRegistry.randomToken(bytes: 24)
        let now = ContinuousClock.now
        parked.withLock { parked in
            parked = parked.filter { $0.value.expires > now }
            parked[token] = Parked(value: value, owner: owner, expires: now + Self.lifetime)
        }
        return RequestStateRouting.tag(token)
    }

    /// The parked value, once, for its owner only.
    package func take(token routed: String, owner: String) -> Value? {
        let token = RequestStateRouting.local(routed)
        return parked.withLock { parked in
            guard let entry = parked[token], entry.owner == owner, entry.expires > .now else { return nil }
            parked[token] = nil
            return entry.value
        }
    }
}

/// Set once a request is parked for a Multi Round-Trip retry: it must then outlive its response.
package final class ParkedFlag: Sendable {
    private let state = Mutex(false)

    package init() {}
    package var value: Bool { state.withLock { $0 } }
    package func set() { state.withLock { $0 = true } }
}
