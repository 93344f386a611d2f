import Foundation
import Synchronization
import Testing
import ThreadShards

/// Per-thread state: every update lands in some copy, a thread keeps its number, and threads
/// running at once get different copies.
@Suite struct PerThreadTests {
    @Test func everyUpdateFromManyThreadsIsSeenByAVisitOfEveryCopy() async {
        let counts = PerThread<Int>(count: 4) { 0 }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<10_000 { counts.withLock { $0 += 1 } } }
            }
        }
        var total = 0
        counts.forEach { total += $0 }
        #expect(total == 80_000)
    }

    @Test func aThreadKeepsItsNumberAndThreadsAtOnceHaveTheirOwn() {
        let first = ThreadSlot.current
        #expect(ThreadSlot.current == first)
        let seen = Mutex<Set<Int>>([])
        let ready = DispatchGroup()
        let release = DispatchSemaphore(value: 0)
        var threads: [Thread] = []
        for _ in 0..<4 {
            ready.enter()
            let thread = Thread {
                let slot = ThreadSlot.current
                seen.withLock { _ = $0.insert(slot) }
                ready.leave()
                // Alive until every thread has its number: none can reuse another's.
                release.wait()
                #expect(ThreadSlot.current == slot)
            }
            threads.append(thread)
            thread.start()
        }
        ready.wait()
        for _ in threads { release.signal() }
        let slots = seen.withLock { $0 }
        #expect(slots.count == 4)
        #expect(!slots.contains(first))
    }
}
