import Synchronization
import Testing

@testable import GatewayUpstream

/// An upstream's era is probed by one request at a time, and a stale one keeps being answered
/// while it is refreshed (no herd of probes when its time to live runs out under load).
@Suite(.timeLimit(.minutes(1))) struct UpstreamErasTests {
    /// A probe that counts its calls and answers only when released.
    private final class GatedProbe: Sendable {
        private let state = Mutex<(calls: Int, waiting: [CheckedContinuation<Void, Never>], open: Bool)>((0, [], false))
        let answer: String

        init(answer: String) { self.answer = answer }

        var calls: Int { state.withLock { $0.calls } }

        func probe() -> UpstreamEras<String>.Probe {
            { [self] in
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state -> Bool in
                        state.calls += 1
                        if state.open { return true }
                        state.waiting.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
                return answer
            }
        }

        func release() {
            let waiting = state.withLock { state in
                state.open = true
                defer { state.waiting = [] }
                return state.waiting
            }
            waiting.forEach { $0.resume() }
        }

        /// Until `count` probes have started (they park on the gate).
        func started(_ count: Int) async {
            while calls < count { await Task.yield() }
        }
    }

    @Test func requestsThatFindTheEraUnknownShareOneProbe() async {
        let eras = UpstreamEras<String>(ttl: .seconds(600))
        let gate = GatedProbe(answer: "modern")
        #expect(eras.known("http://a", probe: gate.probe) == nil)
        let answers = await withTaskGroup(of: String.self) { group in
            for _ in 0..<20 { group.addTask { await eras.era(of: "http://a", probe: gate.probe) } }
            await gate.started(1)
            gate.release()
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(answers == Array(repeating: "modern", count: 20))
        #expect(gate.calls == 1)
        // Fresh now: answered without another probe.
        #expect(eras.known("http://a", probe: gate.probe) == "modern")
        #expect(await eras.era(of: "http://a", probe: gate.probe) == "modern")
        #expect(gate.calls == 1)
    }

    @Test func aStaleEraIsAnsweredWhileOneProbeRefreshesIt() async {
        // No time to live: every answer is stale as soon as it is learned.
        let eras = UpstreamEras<String>(ttl: .zero)
        let first = GatedProbe(answer: "legacy")
        first.release()
        #expect(await eras.era(of: "http://b", probe: first.probe) == "legacy")
        #expect(first.calls == 1)

        let refresh = GatedProbe(answer: "modern")
        // Stale: the old era at once, to the fast path and to the full pipeline, while one
        // refresh (started by the first of them) waits on its upstream.
        for _ in 0..<10 {
            #expect(eras.known("http://b", probe: refresh.probe) == "legacy")
            #expect(await eras.era(of: "http://b", probe: refresh.probe) == "legacy")
        }
        await refresh.started(1)
        #expect(refresh.calls == 1)
        refresh.release()
        // Once the refresh answered, its era is the one given (stale again at once here, so the
        // next lookup starts the next refresh, which answers at once).
        var seen = eras.known("http://b", probe: refresh.probe)
        while seen != "modern" {
            await Task.yield()
            seen = eras.known("http://b", probe: refresh.probe)
        }
        #expect(seen == "modern")
    }

    @Test func eachUpstreamURLHasItsOwnEra() async {
        let eras = UpstreamEras<String>(ttl: .seconds(600))
        let a = GatedProbe(answer: "modern")
        let b = GatedProbe(answer: "legacy")
        a.release()
        b.release()
        #expect(await eras.era(of: "http://a", probe: a.probe) == "modern")
        #expect(await eras.era(of: "http://b", probe: b.probe) == "legacy")
        #expect(eras.known("http://a", probe: b.probe) == "modern")
        #expect((a.calls, b.calls) == (1, 1))
    }
}
