import NIOCore
import NIOPosix
import Synchronization

/// A task executor that runs its jobs on one event loop: the full pipeline's request task
/// prefers its connection's loop, so that wherever it is resumed from (a stdio child's answer
/// read on another loop, an upstream answer on AsyncHTTPClient's) it goes on where its response
/// is written, and the connection's next request finds it there.
///
/// Without the preference, a task resumes on the loop that resumed it (the global executor
/// stays on the current loop): the request's task then crossed to the child's loop and back for
/// every call of a session whose child lives on the other loop, two cross-thread wake-ups where
/// one (the answer handed to the connection's loop) is enough.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }

    /// One executor per loop of the group (made once, never released: the loops live as long).
    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    static func of(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        let key = ObjectIdentifier(eventLoop)
        return executors.withLock { executors in
            if let executor = executors[key] { return executor }
            let executor = EventLoopTaskExecutor(eventLoop: eventLoop)
            executors[key] = executor
            return executor
        }
    }
}
