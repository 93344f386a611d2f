#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import NIOCore
import NIOPosix

/// Swift concurrency's global executor replaced by the NIO event loops, so that a request's task
/// runs on the loop that does its I/O instead of hopping to a thread pool and back.
///
/// NIO's own `NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()`
/// does the same, but runs each job *isolated to the event loop as a serial executor*. The
/// runtime then sees every task as running on a custom serial executor, which it cannot give up
/// in place: each call into a nonisolated `async` function (almost every call in the pipeline)
/// becomes `swift_task_switch` → enqueue on the global executor → the same loop's task queue →
/// run again. Measured on the full pipeline (stdio route, 50 sessions × c = 16): ~16 µs of
/// `swift_task_switch` and ~15 µs of re-enqueueing per request. A global job belongs to no
/// executor in particular (the generic executor); run as such, those switches stay inline.
enum EventLoopsAsGlobalExecutor {
    /// The runtime's hook for `swift_task_enqueueGlobal`: called with the job and the original
    /// implementation.
    private typealias EnqueueGlobalHook = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void

    /// Installs the hook; false when the runtime has no hook to set or another one is set already
    /// (the caller then falls back to NIO's installation). Call once, before any async code runs.
    static func install() -> Bool {
        // The generic executor is the null executor reference (two null words); the runtime has
        // no public spelling of it.
        guard MemoryLayout<UnownedSerialExecutor>.size == 2 * MemoryLayout<UInt>.size,
              let symbol = dlsym(dlopen(nil, RTLD_NOW), "swift_task_enqueueGlobal_hook")
        else { return false }
        let slot = symbol.assumingMemoryBound(to: UnsafeRawPointer?.self)
        guard slot.pointee == nil else { return false }
        let hook: EnqueueGlobalHook = { job, _ in
            // `any()` is the current loop when called on one of the group's loops: a task stays
            // where it is; from elsewhere (a timer thread, a blocking pool) it picks a loop.
            MultiThreadedEventLoopGroup.singleton.any().execute {
                job.runSynchronously(on: unsafeBitCast((UInt(0), UInt(0)), to: UnownedSerialExecutor.self))
            }
        }
        // The hook is written once, before any other thread runs Swift concurrency code.
        withUnsafeBytes(of: hook) { bytes in
            slot.pointee = bytes.load(as: UnsafeRawPointer.self)
        }
        return true
    }
}
