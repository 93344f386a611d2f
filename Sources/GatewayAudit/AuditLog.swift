import Dispatch
import Foundation
public import Logging
import Synchronization
import ThreadShards

/// The audit log file (`audit.file`, or "-" for standard output). Lines are never written on the
/// caller's thread (an event loop, a request task): they are appended to a buffer, and the log's
/// own writer thread writes what gathered every `batchWindow` (one wake-up and one write for all
/// the lines of that time, rather than per line). `flush()` (tests, shutdown) writes at once.
/// SIGUSR1 reopens the file (after logrotate moved it). A file that cannot be opened or written
/// (full disk, permissions) is reported in the gateway's log at most once a minute and never fails
/// a request; the lines of that moment are lost.
public final class AuditLog: AuditSink, Sendable {
    private let writer: Writer
    private let signalSource = Mutex<SignalSource?>(nil)

    /// The SIGUSR1 source: only resumed and cancelled, under the mutex.
    private struct SignalSource: @unchecked Sendable {
        let source: any DispatchSourceSignal
    }

    /// How long lines gather before they are written: what a crash of the process can lose.
    static let batchWindow: Duration = .milliseconds(10)

    /// `afterWrite`: told after each write to the file; `writerEnded`: told when the writer
    /// thread has written what was left and is leaving (tests wait on them rather than on time).
    public init(path: String, logger: Logger, afterWrite: (@Sendable () -> Void)? = nil, writerEnded: (@Sendable () -> Void)? = nil) {
        writer = Writer(path: path, logger: logger, afterWrite: afterWrite, writerEnded: writerEnded)
        writer.start()
    }

    deinit {
        signalSource.withLock { $0?.source.cancel() }
        writer.stop()
    }

    /// Reopens the file on SIGUSR1 (for logrotate's `postrotate kill -USR1`).
    public func reopenOnSIGUSR1() {
        signal(SIGUSR1, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: DispatchQueue(label: "mcp-gateway.audit.reopen"))
        source.setEventHandler { [writer] in writer.reopen() }
        source.resume()
        signalSource.withLock { $0 = SignalSource(source: source) }
    }

    public func record(_ event: AuditEvent) {
        recordLine { event.append(to: &$0) }
    }

    public func recordLine(_ encode: (inout AuditLineWriter) -> Void) {
        writer.add(encode)
    }

    /// Writes every line recorded so far before returning (tests, shutdown).
    public func flush() {
        writer.writePending()
    }
}

/// The lines waiting to be written, the file, and the thread that writes them. Apart from
/// `AuditLog` so that the thread, which holds it, does not keep the log alive: the log's end
/// stops the thread.
private final class Writer: @unchecked Sendable {
    private let path: String
    private let logger: Logger
    private let afterWrite: (@Sendable () -> Void)?
    private let writerEnded: (@Sendable () -> Void)?
    /// Lines recorded and not yet handed to the writer: one batch per thread (each event loop
    /// records a line per request; one shared batch was written from both cores every time). A
    /// write takes every thread's batch in turn, so lines of one batch window from different
    /// threads are grouped by thread, not interleaved by time (each line has its `time`).
    private let pending = PerThread<[UInt8]> { [] }
    /// Whether the writer was woken for what is pending: once for all threads' batches. Cleared
    /// by the write before it takes the batches, so a line added after it took one wakes it for
    /// the next write.
    private let scheduled = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    /// Whether the writer waits on `wakeUp` (nothing came during a batch window). Taken by the
    /// first line after that, which then releases it. While lines keep coming the writer never
    /// waits, and event loops never make the system call that wakes a waiting thread.
    private let idle = Atomic<Bool>(false)
    /// Released by the first line when the writer is idle (and by `stop`). A semaphore, not a
    /// dispatch queue's timer: `asyncAfter` woke libdispatch's timer thread and then a worker
    /// thread for every batch window, which cost more than the write itself.
    private let wakeUp = DispatchSemaphore(value: 0)
    /// The file and what writing needs, for the writer thread, `flush()` and a reopen.
    private let file = Mutex(FileState())

    private struct FileState {
        var descriptor: Int32?
        var lastProblemReport: ContinuousClock.Instant?
        /// Emptied batches, kept for the threads' next ones: a batch is taken by swapping in one of
        /// these, so a thread's lock is held for a swap (its event loop may be waiting on it), not
        /// for a copy of its lines; and the next batch starts with room for as much as an earlier
        /// one (no regrowing per line).
        var spareBatches: [[UInt8]] = []
    }

    init(path: String, logger: Logger, afterWrite: (@Sendable () -> Void)?, writerEnded: (@Sendable () -> Void)?) {
        self.path = path
        self.logger = logger
        self.afterWrite = afterWrite
        self.writerEnded = writerEnded
        file.withLock { open(&$0) }
    }

    /// The writer thread's name (as `top -H` and /proc show it).
    static let threadName = "audit-writer"

    func start() {
        Thread { [self] in
            Self.nameThisThread()
            run()
        }.start()
    }

    /// Foundation's `Thread.name` names only its own view of the thread; `top -H` and /proc read
    /// the kernel's (`pthread_setname_np` is not visible to Swift here).
    private static func nameThisThread() {
        let descriptor = Glibc.open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = threadName.withCString { Glibc.write(descriptor, $0, strlen($0)) }
        close(descriptor)
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        wakeUp.signal()
    }

    /// Idle until a line comes (or `stop`). Says so first, then looks once more: a line recorded
    /// between the write and saying so found the writer busy and released nothing.
    private func waitForLines() {
        idle.store(true, ordering: .sequentiallyConsistent)
        if scheduled.load(ordering: .sequentiallyConsistent) || stopping.load(ordering: .sequentiallyConsistent) {
            // Still idle: nobody took it, nobody will release it. Taken: its taker releases it.
            if idle.exchange(false, ordering: .sequentiallyConsistent) { return }
        }
        wakeUp.wait()
    }

    /// The writer thread: lets a batch window pass, writes, and goes on while lines come; waits
    /// for the next line once a window brought none.
    private func run() {
        waitForLines()
        while !stopping.load(ordering: .acquiring) {
            let (seconds, attoseconds) = AuditLog.batchWindow.components
            var window = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
            var left = timespec()
            while nanosleep(&window, &left) != 0, errno == EINTR { window = left }
            writePending()
            // A line recorded after the write took the batches set `scheduled` again.
            if !scheduled.load(ordering: .sequentiallyConsistent) { waitForLines() }
        }
        writePending()
        file.withLock { state in
            if let descriptor = state.descriptor, descriptor != STDOUT_FILENO { close(descriptor) }
            state.descriptor = nil
        }
        writerEnded?()
    }

    func add(_ encode: (inout AuditLineWriter) -> Void) {
        // Encoded on the stack, then copied into this thread's batch at once: its lock is taken by
        // nobody else but the writer, once a batch window.
        AuditLineWriter.withLine(encode) { line in
            // Typed bytes: an array copies those at once, raw ones byte by byte.
            line.withMemoryRebound(to: UInt8.self) { line in pending.withLock { $0.append(contentsOf: line) } }
        }
        // Read first: the flag changes once a batch window, and only its first reader writes it.
        if !scheduled.load(ordering: .acquiring), scheduled.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged,
           idle.load(ordering: .sequentiallyConsistent), idle.exchange(false, ordering: .sequentiallyConsistent) {
            wakeUp.signal()
        }
    }

    /// Every thread's batch, written in turn (a line is never split between two).
    func writePending() {
        file.withLock { state in
            scheduled.store(false, ordering: .releasing)
            var taken: [[UInt8]] = []
            pending.forEach { pending in
                guard !pending.isEmpty else { return }
                var batch = state.spareBatches.popLast() ?? []
                swap(&pending, &batch)
                taken.append(batch)
            }
            guard !taken.isEmpty else { return }
            write(taken, &state)
            // Taken out of `taken` first: for a batch still referenced there,
            // `removeAll(keepingCapacity:)` allocates a new empty buffer of the same size (the
            // old one is freed with `taken`), and the thread's next lines go to memory no core
            // touched lately.
            while var batch = taken.popLast() {
                batch.removeAll(keepingCapacity: true)
                state.spareBatches.append(batch)
            }
        }
        afterWrite?()
    }

    func reopen() {
        file.withLock { state in
            if let descriptor = state.descriptor, descriptor != STDOUT_FILENO { close(descriptor) }
            state.descriptor = nil
            open(&state)
        }
        logger.info("audit log reopened", metadata: ["file": "\(path)"])
    }

    private func open(_ state: inout FileState) {
        if path == "-" {
            state.descriptor = STDOUT_FILENO
            return
        }
        // Appended to; created readable by the gateway's user only (the log names users and
        // clients).
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            report("cannot open the audit log file: \(String(cString: strerror(errno)))", &state)
            return
        }
        state.descriptor = descriptor
    }

    private func write(_ batches: [[UInt8]], _ state: inout FileState) {
        if state.descriptor == nil { open(&state) }
        guard let descriptor = state.descriptor else { return }
        for lines in batches {
            let failure: Int32? = lines.withUnsafeBytes { bytes in
                guard let base = bytes.baseAddress else { return nil }
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(descriptor, base + offset, bytes.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        return errno
                    }
                    offset += written
                }
                return nil
            }
            if let failure {
                report("cannot write the audit log: \(String(cString: strerror(failure)))", &state)
                if descriptor != STDOUT_FILENO { close(descriptor) }
                state.descriptor = nil
                return
            }
        }
    }

    private func report(_ problem: String, _ state: inout FileState) {
        let now = ContinuousClock.now
        if let last = state.lastProblemReport, now - last < .seconds(60) { return }
        state.lastProblemReport = now
        logger.error("\(problem); audit lines are being lost", metadata: ["file": "\(path)"])
    }
}
