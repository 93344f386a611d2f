import Dispatch
import Foundation
public import Logging
import Synchronization
import ThreadShards

/// The audit log file (`audit.file`, or "-" for standard output). Lines are never written on the
/// caller's thread (an event loop, a request task): they are appended to a buffer, and one serial
/// writer queue writes what gathered every `batchWindow` (one wake-up and one write for all the
/// lines of that time, rather than per line). `flush()` (tests, shutdown) writes at once. SIGUSR1
/// reopens the file (after logrotate moved it). A file that cannot be opened or written (full
/// disk, permissions) is reported in the gateway's log at most once a minute and never fails a
/// request; the lines of that moment are lost.
public final class AuditLog: AuditSink, @unchecked Sendable {
    private let path: String
    private let logger: Logger
    private let queue = DispatchQueue(label: "mcp-gateway.audit")
    /// Only touched on `queue`.
    private var handle: FileHandle?
    private var lastProblemReport: Date?
    private var signalSource: (any DispatchSourceSignal)?
    /// Lines recorded and not yet handed to the writer: one batch per thread (each event loop
    /// records a line per request; one shared batch was written from both cores every time). A
    /// write takes every thread's batch in turn, so lines of one batch window from different
    /// threads are grouped by thread, not interleaved by time (each line has its `time`).
    private let pending = PerThread<[UInt8]> { [] }
    /// Whether a write of what is pending is scheduled: one for all threads' batches. Cleared
    /// by the write before it takes the batches, so a line added after it took one schedules
    /// the next write.
    private let scheduled = Atomic<Bool>(false)
    /// How long lines gather before they are written: what a crash of the process can lose.
    static let batchWindow = DispatchTimeInterval.milliseconds(10)

    /// Told after each write to the file (tests wait on it rather than on time).
    private let afterWrite: (@Sendable () -> Void)?

    public init(path: String, logger: Logger, afterWrite: (@Sendable () -> Void)? = nil) {
        self.path = path
        self.logger = logger
        self.afterWrite = afterWrite
        queue.sync { self.open() }
    }

    /// Reopens the file on SIGUSR1 (for logrotate's `postrotate kill -USR1`).
    public func reopenOnSIGUSR1() {
        signal(SIGUSR1, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: queue)
        source.setEventHandler { [weak self] in
            guard let self else { return }
            try? self.handle?.close()
            self.handle = nil
            self.open()
            self.logger.info("audit log reopened", metadata: ["file": "\(self.path)"])
        }
        source.resume()
        queue.sync { self.signalSource = source }
    }

    public func record(_ event: AuditEvent) {
        recordLine { event.append(to: &$0) }
    }

    public func recordLine(_ encode: (inout AuditLineWriter) -> Void) {
        // Encoded on the stack, then copied into this thread's batch at once: its lock is taken by
        // nobody else but the writer, once a batch window.
        AuditLineWriter.withLine(encode) { line in
            // Typed bytes: an array copies those at once, raw ones byte by byte.
            line.withMemoryRebound(to: UInt8.self) { line in pending.withLock { $0.append(contentsOf: line) } }
        }
        // Read first: the flag changes once a batch window, and only its first reader writes it.
        if !scheduled.load(ordering: .acquiring), scheduled.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            queue.asyncAfter(deadline: .now() + Self.batchWindow) { self.writePending() }
        }
    }

    /// Writes every line recorded so far before returning (tests, shutdown).
    public func flush() {
        queue.sync { writePending() }
    }

    /// Emptied batches, kept for the threads' next ones (only touched on `queue`): a batch is
    /// taken by swapping in one of these, so a thread's lock is held for a swap (its event loop
    /// may be waiting on it), not for a copy of its lines; and the next batch starts with room
    /// for as much as an earlier one (no regrowing per line).
    private var spareBatches: [[UInt8]] = []

    /// On `queue`.
    private func writePending() {
        scheduled.store(false, ordering: .releasing)
        var taken: [[UInt8]] = []
        pending.forEach { pending in
            guard !pending.isEmpty else { return }
            var batch = spareBatches.popLast() ?? []
            swap(&pending, &batch)
            taken.append(batch)
        }
        guard !taken.isEmpty else { return }
        write(taken)
        // Taken out of `taken` first: for a batch still referenced there,
        // `removeAll(keepingCapacity:)` allocates a new empty buffer of the same size (the old one
        // is freed with `taken`), and the thread's next lines go to memory no core touched lately.
        while var batch = taken.popLast() {
            batch.removeAll(keepingCapacity: true)
            spareBatches.append(batch)
        }
        afterWrite?()
    }

    private func open() {
        if path == "-" {
            handle = FileHandle.standardOutput
            return
        }
        if !FileManager.default.fileExists(atPath: path) {
            // Readable by the gateway's user only: the log names users and clients.
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let opened = FileHandle(forWritingAtPath: path) else {
            report("cannot open the audit log file")
            return
        }
        do { try opened.seekToEnd() } catch { report("cannot append to the audit log file: \(error)") }
        handle = opened
    }

    /// Each thread's batch in turn (a line is never split between two).
    private func write(_ batches: [[UInt8]]) {
        if handle == nil { open() }
        guard let handle else { return }
        do {
            for lines in batches { try handle.write(contentsOf: lines) }
        } catch {
            report("cannot write the audit log: \(error)")
            try? handle.close()
            self.handle = nil
        }
    }

    private func report(_ problem: String) {
        let now = Date()
        if let last = lastProblemReport, now.timeIntervalSince(last) < 60 { return }
        lastProblemReport = now
        logger.error("\(problem); audit lines are being lost", metadata: ["file": "\(path)"])
    }
}
