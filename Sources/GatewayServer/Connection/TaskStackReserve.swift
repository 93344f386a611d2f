#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Room for a request task's async frames, made in one piece.
///
/// A task's async frames live in its task allocator: a stack of slabs, each `malloc`ed when the
/// frame being allocated does not fit the current one, all freed when the task ends. The
/// pipeline's frames are several KiB each (each holds the request, its context and the exchange),
/// so a request task allocated a new slab for almost every level of its deepest chain: seven to
/// nine `malloc`/`free` pairs of 5–9 KiB per request, beyond glibc's per-thread cache (perf on the
/// stdio full pipeline: malloc and free 14 µs per request, 10 µs with the reserve). Allocated and
/// freed at once, a reserve stays with the task as an empty slab, and the allocator puts every
/// later frame that fits into it (it reuses an empty successor slab before it makes a new one):
/// one pair per request.
enum TaskStackReserve {
    /// Enough for the deepest chain of the full pipeline (~40 KiB on a stdio session; a deeper
    /// one takes further slabs, as before). Under glibc's mmap threshold (128 KiB).
    static let bytes = 56 * 1024

    /// Call first thing in a new task, before it awaits anything: the reserve becomes the task
    /// allocator's next slab. Does nothing when the runtime does not export the allocator.
    static func make() {
        guard let entryPoints else { return }
        let reserve = entryPoints.allocate(bytes)
        entryPoints.deallocate(reserve)
    }

    /// `swift_task_alloc` and `swift_task_dealloc`: the runtime's (stable ABI) allocation in the
    /// current task's allocator, and the release of its last allocation. Looked up rather than
    /// declared: the compiler reserves their names. Both take and return one pointer-sized
    /// integer register, where the Swift and C conventions agree.
    private struct EntryPoints {
        let allocate: @convention(c) (Int) -> UnsafeMutableRawPointer
        let deallocate: @convention(c) (UnsafeMutableRawPointer) -> Void
    }

    private static let entryPoints: EntryPoints? = {
        let process = dlopen(nil, RTLD_NOW)
        guard let allocate = dlsym(process, "swift_task_alloc"), let deallocate = dlsym(process, "swift_task_dealloc") else { return nil }
        return EntryPoints(
            allocate: unsafeBitCast(allocate, to: (@convention(c) (Int) -> UnsafeMutableRawPointer).self),
            deallocate: unsafeBitCast(deallocate, to: (@convention(c) (UnsafeMutableRawPointer) -> Void).self)
        )
    }()
}
