package import GatewayConfig
import GatewayAuth
import Logging
package import GatewayStore
package import MCPTransport
import MCPMessages
import AuthorizationServer
import Foundation
import Synchronization
import ThreadShards

/// `rateLimit`: each request counts against its caller's allowance in the store (Redis: shared by
/// every gateway instance, one round trip); `tools/call` of a tool with its own limit counts
/// against that one instead. A router counts separately from other routers using the same
/// middleware, as in Traefik.
package struct RateLimiter: RouteMiddleware {
    package let name: String
    package let configuration: RateLimitConfiguration
    package let store: any KeyValueStore
    /// When a store failure was last logged (seconds since the epoch): at most once a minute.
    private let lastStoreErrorLog = LastLogged()

    /// The store's callback form, when it has one (asked once, not per request).
    private let immediateStore: (any CallbackRateLimiting)?
    /// Where every key of this middleware starts.
    private let keyPrefix: String
    /// The last key each thread built and what from: a connection's requests (one client on one
    /// router) count against the same allowance one after another, and building the key again
    /// cost more than deciding the limit.
    private let lastKeys = PerThread<KeyMemo?> { nil }

    private struct KeyMemo {
        let router: String
        let pattern: String?
        let kind: String
        let whose: String
        let key: String
    }

    package init(name: String, configuration: RateLimitConfiguration, store: any KeyValueStore) {
        self.name = name
        self.configuration = configuration
        self.store = store
        self.immediateStore = store as? any CallbackRateLimiting
        self.keyPrefix = "ratelimit:mw:\(name):"
    }

    package func admit(_ request: MiddlewareRequest) async throws(GatewayError) {
        let counted = counter(for: request)
        let decision: Result<RateLimitDecision, StoreError>
        do {
            decision = .success(try await store.rateLimit(counted.key, interval: counted.limit.interval, burst: counted.limit.burst))
        } catch {
            decision = .failure(error)
        }
        if let refusal = verdict(decision, request: request, counted: counted) { throw refusal }
    }

    package var decidesWithoutTask: Bool { immediateStore != nil }

    package func admitNow(_ request: MiddlewareRequest) -> MiddlewareVerdict {
        let counted = counter(for: request)
        // The store is asked where it is stored (`immediateStore?.`): binding it to a name copies
        // the existential, a retain of the store every event loop shares, on every request.
        switch immediateStore?.rateLimitNow(counted.key, interval: counted.limit.interval, burst: counted.limit.burst) {
        case .decided(let decision)?:
            return verdict(.success(decision), request: request, counted: counted).map(MiddlewareVerdict.refused) ?? .proceed
        case .ask(let ask)?:
            return .pending { [self] decided in
                guard let store = immediateStore else { return admitInTask(request, decided: decided) }
                store.rateLimit(asking: ask) { decision in decided(verdict(decision, request: request, counted: counted)) }
            }
        case nil:
            // A store without the callback form.
            return .pending { decided in admitInTask(request, decided: decided) }
        }
    }

    /// The allowance a request counts against: the store key, the per-tool pattern that chose
    /// it (nil: the middleware's own limit) and that limit.
    private struct Counted {
        let key: String
        let pattern: String?
        let limit: RateLimitConfiguration.Limit
        let tool: String?
    }

    private func counter(for request: MiddlewareRequest) -> Counted {
        // The tool name is looked for only when some tool has a limit of its own.
        let tool = request.call.method == "tools/call" && !configuration.tools.isEmpty ? request.call.target : nil
        let (pattern, limit) = configuration.limit(forTool: tool)
        let (kind, whose) = caller(of: request)
        let remembered = lastKeys.withLock { memo -> String? in
            guard let memo, memo.whose == whose, memo.router == request.router, memo.pattern == pattern, memo.kind == kind else { return nil }
            return memo.key
        }
        if let remembered { return Counted(key: remembered, pattern: pattern, limit: limit, tool: tool) }
        let key = Self.key(prefix: keyPrefix, router: request.router, pattern: pattern, kind: kind, whose: whose)
        lastKeys.withLock { $0 = KeyMemo(router: request.router, pattern: pattern, kind: kind, whose: whose, key: key) }
        return Counted(key: key, pattern: pattern, limit: limit, tool: tool)
    }

    /// `<prefix><router>:*:<kind><whose>`, or `<prefix><router>:tool:<pattern>:<kind><whose>`.
    private static func key(prefix keyPrefix: String, router: String, pattern: String?, kind: String, whose: String) -> String {
        var length = keyPrefix.utf8.count + router.utf8.count + kind.utf8.count + whose.utf8.count
        length += pattern.map { $0.utf8.count + 7 } ?? 3
        // One allocation of the exact length, written once (appending piece by piece costs a
        // capacity and uniqueness check per piece, on every request).
        return String(unsafeUninitializedCapacity: length) { buffer in
            var written = 0
            func put(_ text: String) {
                var text = text
                text.withUTF8 { bytes in
                    guard written + bytes.count <= buffer.count else { return }
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[written..<written + bytes.count]).initialize(fromContentsOf: bytes)
                    written += bytes.count
                }
            }
            put(keyPrefix)
            put(router)
            if let pattern {
                put(":tool:")
                put(pattern)
                put(":")
            } else {
                put(":*:")
            }
            put(kind)
            put(whose)
            return written
        }
    }

    /// nil: go on; otherwise the refusal (429, or 503 when the store failed and `onStoreError`
    /// is `deny`).
    private func verdict(_ result: Result<RateLimitDecision, StoreError>, request: MiddlewareRequest, counted: Counted) -> GatewayError? {
        let (pattern, limit, tool) = (counted.pattern, counted.limit, counted.tool)
        let decision: RateLimitDecision
        switch result {
        case .success(let decided): decision = decided
        case .failure(let error):
            if lastStoreErrorLog.due() {
                request.logger.warning("rate limit cannot be checked: the store is unavailable", metadata: [
                    "middleware": "\(name)", "router": "\(request.router)", "onStoreError": "\(configuration.onStoreError.rawValue)", "error": "\(error)",
                ])
            }
            switch configuration.onStoreError {
            case .allow: return nil
            case .deny: return .storeUnavailable
            }
        }
        guard decision.allowed else {
            let called = tool ?? (request.call.method == "tools/call" ? request.call.target : nil)
            request.logger.notice("rate limited", metadata: ["middleware": "\(name)", "router": "\(request.router)", "tool": "\(called ?? "")"])
            return .rateLimited(RateLimitRefusal(
                policy: pattern.map { "\(name);tool=\($0)" } ?? name, quota: limit.average, window: limit.period, retryAfter: decision.retryAfter
            ))
        }
        return nil
    }

    /// Whose allowance the request uses: `by` on protected routers; the client address when there
    /// is no verified caller (`auth: none`), whatever `by` says.
    private func caller(of request: MiddlewareRequest) -> (kind: String, whose: String) {
        guard let caller = request.caller else { return ("ip:", ClientAddress.limitKey(request.clientIP)) }
        switch configuration.by {
        case .user: return ("user:", caller.claims.sub)
        case .client: return ("client:", caller.claims.client_id)
        case .ip: return ("ip:", ClientAddress.limitKey(request.clientIP))
        }
    }
}

/// A once-a-minute gate for a log line that could otherwise repeat on every request.
final class LastLogged: Sendable {
    private let last = Atomic<Int64>(0)

    func due(now: Int64 = Int64(Date().timeIntervalSince1970)) -> Bool {
        let previous = last.load(ordering: .relaxed)
        guard now - previous >= 60 || previous == 0 else { return false }
        return last.compareExchange(expected: previous, desired: now, ordering: .relaxed).exchanged
    }
}
