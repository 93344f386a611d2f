import CHiredis
import GatewayStore
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Where and how to reach Redis, from a `redis://[:password@]host[:port][/db]` or `unix:///path` URL.
public struct RedisEndpoint: Sendable, Equatable {
    public enum Address: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var address: Address
    /// ACL user (Redis 6+); nil authenticates as the default user.
    public var user: String?
    public var password: String?
    public var database: Int

    public init?(url: String) {
        guard let components = URLComponents(string: url) else { return nil }
        switch components.scheme {
        case "redis":
            guard let host = components.host, !host.isEmpty else { return nil }
            address = .tcp(host: host, port: components.port ?? 6379)
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            database = path.isEmpty ? 0 : (Int(path) ?? -1)
            guard database >= 0 else { return nil }
        case "unix":
            guard !components.path.isEmpty else { return nil }
            address = .unix(path: components.path)
            database = 0
        default:
            return nil
        }
        // redis://:secret@host authenticates the default user; redis://name:secret@host an ACL user.
        password = components.password?.removingPercentEncoding
        user = password == nil ? nil : components.user.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding }
    }
}

/// One hiredis connection. hiredis is blocking, so every call runs on this connection's own
/// thread and never on an event loop; calls on one connection are serialised by that thread.
/// Calls that arrive while the thread is busy are queued and sent together (automatic
/// pipelining): one wake-up of the thread, one write and one pass over the replies for all of
/// them, so concurrent requests share the cost of the hand-off.
/// A broken connection is dropped and re-established on a later call, with backoff, so callers
/// fail fast (503) while Redis is away and recover without a restart when it returns.
final class RedisConnection: Sendable {
    private struct Context: @unchecked Sendable {
        // Only touched on `thread`'s single thread.
        var pointer: UnsafeMutablePointer<redisContext>?
    }

    private struct Backoff {
        var failures = 0
        /// No attempt before then (the connection's clock); the distant past: none waited for.
        var nextAttempt = NIODeadline.distantPast
    }

    private let endpoint: RedisEndpoint
    private let timeout: Duration
    private let thread: NIOThreadPool
    private let context = Mutex(Context())
    private let backoff = Mutex(Backoff())
    /// The backoff's clock (tests move it on instead of waiting).
    private let now: @Sendable () -> NIODeadline

    /// Calls waiting for the thread, and whether a drain of them is scheduled on it.
    private struct Queue {
        var pending: [(commands: [[[UInt8]]], done: CheckedContinuation<Result<[RedisValue], StoreError>, Never>)] = []
        var draining = false
    }

    private let queue = Mutex(Queue())

    init(endpoint: RedisEndpoint, timeout: Duration, now: @escaping @Sendable () -> NIODeadline) {
        self.endpoint = endpoint
        self.timeout = timeout
        self.now = now
        self.thread = NIOThreadPool(numberOfThreads: 1)
        self.thread.start()
    }

    func shutdown() async {
        _ = try? await thread.runIfActive { [self] in
            context.withLock { context in
                if let pointer = context.pointer { redisFree(pointer) }
                context.pointer = nil
            }
        }
        try? await thread.shutdownGracefully()
    }

    /// Sends commands in one round trip and returns their replies in order.
    func pipeline(_ commands: [[[UInt8]]]) async throws(StoreError) -> [RedisValue] {
        let wait = backoff.withLock { $0.nextAttempt - now() }
        if wait > .zero {
            throw .unavailable("reconnecting to Redis (next attempt in \(Duration.milliseconds(wait.nanoseconds / 1_000_000)))")
        }
        let result: Result<[RedisValue], StoreError> = await withCheckedContinuation { done in
            let schedule = queue.withLock { queue -> Bool in
                queue.pending.append((commands, done))
                defer { queue.draining = true }
                return !queue.draining
            }
            guard schedule else { return }
            thread.submit { [self] state in
                guard case .active = state else {
                    failAll(.unavailable("the Redis connection is shut down"))
                    return
                }
                drain()
            }
        }
        switch result {
        case .success(let values):
            backoff.withLock { $0 = Backoff() }
            return values
        case .failure(let error):
            if case .unavailable = error {
                backoff.withLock { state in
                    state.failures += 1
                    // 50 ms, 100 ms, … capped at 2 s.
                    let delay = min(2000, 50 << min(state.failures - 1, 6))
                    state.nextAttempt = now() + .milliseconds(Int64(delay))
                }
            }
            throw error
        }
    }

    // MARK: on the connection's thread

    /// Sends every queued call in one pipeline until the queue is empty.
    private func drain() {
        while true {
            let batch = queue.withLock { queue in
                let batch = queue.pending
                queue.pending.removeAll(keepingCapacity: true)
                if batch.isEmpty { queue.draining = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            switch execute(batch.flatMap(\.commands)) {
            case .success(let replies):
                var offset = 0
                for call in batch {
                    call.done.resume(returning: .success(Array(replies[offset..<offset + call.commands.count])))
                    offset += call.commands.count
                }
            case .failure(let error):
                for call in batch { call.done.resume(returning: .failure(error)) }
            }
        }
    }

    private func failAll(_ error: StoreError) {
        let batch = queue.withLock { queue in
            defer {
                queue.pending.removeAll()
                queue.draining = false
            }
            return queue.pending
        }
        for call in batch { call.done.resume(returning: .failure(error)) }
    }

    private func execute(_ commands: [[[UInt8]]]) -> Result<[RedisValue], StoreError> {
        context.withLock { context in
            if context.pointer == nil {
                switch connect() {
                case .success(let pointer): context.pointer = pointer
                case .failure(let error): return .failure(error)
                }
            }
            guard let pointer = context.pointer else { return .failure(.unavailable("not connected")) }
            for command in commands {
                append(pointer, command)
            }
            var replies: [RedisValue] = []
            for _ in commands {
                var raw: UnsafeMutableRawPointer?
                let status = redisGetReply(pointer, &raw)
                guard status == REDIS_OK, let raw else {
                    let message = Self.errorText(pointer)
                    redisFree(pointer)
                    context.pointer = nil
                    return .failure(.unavailable(message))
                }
                let reply = raw.assumingMemoryBound(to: redisReply.self)
                replies.append(Self.convert(reply))
                freeReplyObject(raw)
            }
            return .success(replies)
        }
    }

    private func append(_ pointer: UnsafeMutablePointer<redisContext>, _ command: [[UInt8]]) {
        var arguments: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        let storage = command.map { bytes -> UnsafeMutableBufferPointer<CChar> in
            let buffer = UnsafeMutableBufferPointer<CChar>.allocate(capacity: max(1, bytes.count))
            for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
            return buffer
        }
        defer { storage.forEach { $0.deallocate() } }
        for (index, buffer) in storage.enumerated() {
            arguments.append(UnsafePointer(buffer.baseAddress))
            lengths.append(command[index].count)
        }
        arguments.withUnsafeMutableBufferPointer { argv in
            lengths.withUnsafeBufferPointer { argvlen in
                _ = redisAppendCommandArgv(pointer, Int32(command.count), argv.baseAddress, argvlen.baseAddress)
            }
        }
    }

    private func connect() -> Result<UnsafeMutablePointer<redisContext>, StoreError> {
        let seconds = timeout.components.seconds
        let micros = timeout.components.attoseconds / 1_000_000_000_000
        let tv = timeval(tv_sec: Int(seconds), tv_usec: Int(micros))
        let pointer: UnsafeMutablePointer<redisContext>?
        switch endpoint.address {
        case .tcp(let host, let port): pointer = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path): pointer = redisConnectUnixWithTimeout(path, tv)
        }
        guard let pointer else { return .failure(.unavailable("cannot allocate a Redis context")) }
        guard pointer.pointee.err == 0 else {
            let message = Self.errorText(pointer)
            redisFree(pointer)
            return .failure(.unavailable("cannot connect to Redis: \(message)"))
        }
        _ = redisSetTimeout(pointer, tv)
        // hiredis opens its socket without close-on-exec: a child spawned now must not inherit an
        // authenticated connection to the gateway's state (the spawn shim closes the rest too).
        let descriptor = pointer.pointee.fd
        _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
        var setup: [[[UInt8]]] = []
        if let password = endpoint.password {
            setup.append([Array("AUTH".utf8)] + (endpoint.user.map { [Array($0.utf8)] } ?? []) + [Array(password.utf8)])
        }
        if endpoint.database != 0 { setup.append([Array("SELECT".utf8), Array(String(endpoint.database).utf8)]) }
        for command in setup {
            append(pointer, command)
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(pointer, &raw) == REDIS_OK, let raw else {
                redisFree(pointer)
                return .failure(.unavailable("Redis connection setup failed"))
            }
            let reply = Self.convert(raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            if case .error(let message) = reply {
                redisFree(pointer)
                // A wrong password or database is a configuration problem, reported as such.
                return .failure(.rejected("Redis refused \(String(decoding: command[0], as: UTF8.self)): \(message)"))
            }
        }
        return .success(pointer)
    }

    private static func errorText(_ pointer: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: pointer.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "connection lost" : String(decoding: bytes, as: UTF8.self)
        }
    }

    static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            guard let str = value.str else { return .string([]) }
            return .string(Array(UnsafeRawBufferPointer(start: str, count: Int(value.len))))
        case REDIS_REPLY_INTEGER:
            return .integer(value.integer)
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_STATUS:
            return .status(value.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_ERROR:
            return .error(value.str.map { String(cString: $0) } ?? "error")
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            for index in 0..<Int(value.elements) {
                if let element = value.element[index] { elements.append(convert(element)) }
            }
            return .array(elements)
        default:
            return .error("unknown reply type \(value.type)")
        }
    }
}
