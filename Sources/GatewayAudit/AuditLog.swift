import Dispatch
import Foundation
public import Logging
import Synchronization

/// The audit log file (`audit.file`, or "-" for standard output). Lines are handed to one serial
/// writer queue, never written on the caller's thread (an event loop, a request task). SIGUSR1
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

    public init(path: String, logger: Logger) {
        self.path = path
        self.logger = logger
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
        let line = event.line
        queue.async { self.write(line) }
    }

    /// Waits until every line recorded so far is written (tests, shutdown).
    public func flush() {
        queue.sync {}
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

    private func write(_ line: String) {
        if handle == nil { open() }
        guard let handle else { return }
        do {
            try handle.write(contentsOf: Data(line.utf8))
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
