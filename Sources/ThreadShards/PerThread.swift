#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Synchronization

/// State kept once per thread that uses it, each copy behind its own lock, for what every event
/// loop updates on every request (audit lines, metric observations, rate-limit reserves). One shared
/// lock and its data, written from two cores for each request, move between the cores' caches on
/// every write and make the loops queue on each other; a copy per thread stays in its core's cache
/// and its lock is uncontended. Readers that need everything (a flush, a scrape) visit every copy.
///
/// Its methods are `@inlinable`: a generic type used from another module is otherwise run
/// unspecialized, looking up type metadata at run time on every call.
public final class PerThread<State: Sendable>: Sendable {
    @usableFromInline let shards: [Shard]

    @usableFromInline final class Shard: Sendable {
        @usableFromInline let state: Mutex<State>
        /// Keeps the next copy (allocated right after this one) off this one's cache line: two
        /// copies on one line would bounce between the cores as one shared value does.
        private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
        init(_ state: State) { self.state = Mutex(state) }
    }

    /// `count` copies made by `make`; threads beyond `count` share them (correct, only slower).
    public init(count: Int = 16, _ make: () -> State) {
        shards = (0..<max(1, count)).map { _ in Shard(make()) }
    }

    /// `body` on the calling thread's copy.
    @inlinable public func withLock<Result, E: Error>(_ body: (inout sending State) throws(E) -> sending Result) throws(E) -> sending Result {
        try shards[currentIndex].state.withLock(body)
    }

    /// Which copy the calling thread uses: for work that starts on one thread and may finish on
    /// another (`withLock(at:_:)` then returns to the same copy).
    @inlinable public var currentIndex: Int { ThreadSlot.current % shards.count }

    /// `body` on the copy `currentIndex` named (any index: taken modulo the copies).
    @inlinable public func withLock<Result, E: Error>(at index: Int, _ body: (inout sending State) throws(E) -> sending Result) throws(E) -> sending Result {
        try shards[abs(index % shards.count)].state.withLock(body)
    }

    /// `body` on each copy in turn (each under its lock, one at a time).
    @inlinable public func forEach(_ body: (inout sending State) -> Void) {
        for shard in shards { shard.state.withLock { body(&$0) } }
    }
}

/// A small number for the calling thread, the same for as long as it lives: threads are numbered
/// in the order they first ask (so the first few, the event loops, get different numbers).
public enum ThreadSlot {
    private static let key: pthread_key_t? = {
        var key = pthread_key_t()
        return pthread_key_create(&key, nil) == 0 ? key : nil
    }()
    private static let next = Atomic<Int>(0)

    public static var current: Int {
        guard let key else { return 0 }
        if let stored = pthread_getspecific(key) { return Int(bitPattern: stored) - 1 }
        let slot = next.add(1, ordering: .relaxed).oldValue
        // Stored plus one: a thread without a number reads nil.
        _ = pthread_setspecific(key, UnsafeRawPointer(bitPattern: slot + 1))
        return slot
    }
}
