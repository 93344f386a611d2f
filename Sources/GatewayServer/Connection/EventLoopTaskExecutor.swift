import NIOCore

/// Runs a connection's async work on the event loop that owns its channel. Without it, every
/// request's pipeline ran on Swift's cooperative pool and hopped to the event loop for each read
/// and write: a quarter of the gateway's CPU under load was the kernel scheduling those hops
/// (bench/results-profile.md). Work that blocks is already sent to thread pools (password hashes,
/// Redis, process spawns, files), so nothing here holds the loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { [self] in
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
