import Logging
import NIOCore
import Synchronization

/// Relays a child's stderr into the gateway log, tagged with service and session. A noisy child
/// is always drained (so it never blocks on a full pipe) but logged at a bounded rate; what is
/// dropped is counted and reported.
final class StderrRelay: Sendable {
    private let logger: Logger
    private let linesPerSecond: Int
    private let state = Mutex<(windowStart: ContinuousClock.Instant, logged: Int, suppressed: Int)>((.now, 0, 0))

    init(logger: Logger, linesPerSecond: Int = 50) {
        self.logger = logger
        self.linesPerSecond = linesPerSecond
    }

    func relay(_ line: ByteBuffer) {
        let now = ContinuousClock.now
        let (shouldLog, suppressedReport, flushAt) = state.withLock { state -> (Bool, Int, ContinuousClock.Instant?) in
            var report = 0
            if now - state.windowStart >= .seconds(1) {
                report = state.suppressed
                state = (now, 0, 0)
            }
            if state.logged < linesPerSecond {
                state.logged += 1
                return (true, report, nil)
            }
            state.suppressed += 1
            // The first suppressed line of a window: report the count when the window closes, even
            // if the burst ends before another line arrives.
            return (false, report, state.suppressed == 1 ? state.windowStart : nil)
        }
        if suppressedReport > 0 {
            logger.warning("child stderr: lines suppressed (rate limit)", metadata: ["suppressed": "\(suppressedReport)"])
        }
        if let windowStart = flushAt {
            // Held until then (at most a second): a child that ends within the window, its
            // relay released with it, still has its suppressed lines reported.
            Task { [self] in
                try? await Task.sleep(until: windowStart + .seconds(1), clock: .continuous)
                flush(windowStart: windowStart)
            }
        }
        if shouldLog {
            logger.info("child stderr", metadata: ["line": "\(String(buffer: line))"])
        }
    }

    private func flush(windowStart: ContinuousClock.Instant) {
        let count = state.withLock { state -> Int in
            guard state.windowStart == windowStart, state.suppressed > 0 else { return 0 }
            defer { state.suppressed = 0 }
            return state.suppressed
        }
        if count > 0 {
            logger.warning("child stderr: lines suppressed (rate limit)", metadata: ["suppressed": "\(count)"])
        }
    }
}
