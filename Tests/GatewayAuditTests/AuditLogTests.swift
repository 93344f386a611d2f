import Foundation
import GatewayAudit
import Logging
import Synchronization
import Testing

@Suite struct AuditLogTests {
    private func temporaryFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("audit-\(UUID().uuidString).log").path
    }

    @Test func linesRecordedFromManyThreadsAreAllWrittenWholeByFlush() async throws {
        let path = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = AuditLog(path: path, logger: Logger(label: "test"))
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    for index in 0..<250 {
                        log.record(AuditEvent("mcp.request", [("writer", .integer(Int64(writer))), ("index", .integer(Int64(index))), ("user", .string("ünï\u{1}"))]))
                    }
                }
            }
        }
        log.flush()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(text.hasSuffix("\n"))
        #expect(lines.count == 2000)
        var seen = Set<[Int]>()
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object["user"] as? String == "ünï\u{1}")
            seen.insert([try #require(object["writer"] as? Int), try #require(object["index"] as? Int)])
        }
        #expect(seen.count == 2000)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    /// Lines recorded in a burst are written together: one write per batch window, not per line
    /// (a write per line is a wake-up of the writer and a system call on every request).
    @Test func aBurstOfLinesIsWrittenInAFewWrites() async throws {
        let path = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writes = Mutex(0)
        let log = AuditLog(path: path, logger: Logger(label: "test"), afterWrite: { writes.withLock { $0 += 1 } })
        let started = ContinuousClock.now
        // Two threads at once, as two event loops.
        let group = DispatchGroup()
        for half in 0..<2 {
            group.enter()
            Thread {
                for index in 0..<500 {
                    log.record(AuditEvent("mcp.request", [("index", .integer(Int64(half * 500 + index)))]))
                }
                group.leave()
            }.start()
        }
        group.wait()
        let elapsed = ContinuousClock.now - started
        log.flush()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 1000)
        // A write per batch window that passed while recording, and the flush's.
        let windows = Int(elapsed / .milliseconds(10)) + 2
        #expect(writes.withLock { $0 } <= windows, "\(writes.withLock { $0 }) writes for 1000 lines in \(elapsed)")
    }

    @Test(.timeLimit(.minutes(1))) func linesAreWrittenWithoutAFlushWithinTheBatchWindow() async throws {
        let path = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (written, signal) = AsyncStream<Void>.makeStream()
        let log = AuditLog(path: path, logger: Logger(label: "test"), afterWrite: { signal.yield() })
        let recorded = ContinuousClock.now
        log.record(AuditEvent("auth.signin", [("user", .string("alice"))]))
        // The writer runs on its own once the batch window has passed: no flush is asked for.
        var writes = written.makeAsyncIterator()
        _ = await writes.next()
        #expect(ContinuousClock.now - recorded < .seconds(5))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains(#""event":"auth.signin","user":"alice"}"#))
    }

    /// The writer waits once a batch window brought no line; the next line wakes it again.
    /// Lines one at a time, each written before the next is recorded, take that path each time.
    @Test(.timeLimit(.minutes(1))) func aLineAfterAQuietWindowWakesTheWriterAgain() async throws {
        let path = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (written, signal) = AsyncStream<Void>.makeStream()
        let log = AuditLog(path: path, logger: Logger(label: "test"), afterWrite: { signal.yield() })
        var writes = written.makeAsyncIterator()
        for index in 0..<5 {
            log.record(AuditEvent("auth.signin", [("index", .integer(Int64(index)))]))
            var text = ""
            while !text.contains(#""index":\#(index)}"#), await writes.next() != nil {
                text = try String(contentsOfFile: path, encoding: .utf8)
            }
            #expect(text.split(separator: "\n").count == index + 1)
        }
    }

    /// The writer thread ends with the log, and writes what was recorded before it ends (a
    /// test's log, a gateway stopping): no thread is left behind, no line lost.
    @Test(.timeLimit(.minutes(1))) func theWriterWritesWhatIsLeftAndEndsWithTheLog() async throws {
        let path = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (ended, signal) = AsyncStream<Void>.makeStream()
        var log: AuditLog? = AuditLog(path: path, logger: Logger(label: "test"), writerEnded: { signal.yield() })
        for index in 0..<100 { log?.record(AuditEvent("auth.signin", [("user", .string("alice")), ("index", .integer(Int64(index)))])) }
        log = nil
        var ends = ended.makeAsyncIterator()
        _ = await ends.next()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 100)
        #expect(text.contains(#""event":"auth.signin","user":"alice","index":99}"#))
    }

    /// A file that cannot be opened is said in the gateway's log, once a minute, and recording
    /// goes on without failing (the lines of that moment are lost).
    @Test func aFileThatCannotBeOpenedIsReportedOnceAndNothingFails() throws {
        let messages = CapturedMessages()
        let path = "/nonexistent-\(UUID().uuidString)/audit.log"
        let log = AuditLog(path: path, logger: Logger(label: "test") { _ in CapturingLogHandler(messages: messages) })
        for _ in 0..<3 {
            log.record(AuditEvent("auth.signin", [("user", .string("alice"))]))
            log.flush()
        }
        let errors = messages.all.filter { $0.level == .error }
        #expect(errors.count == 1)
        #expect(errors.first?.text.contains("cannot open the audit log file") == true)
        #expect(errors.first?.text.contains("audit lines are being lost") == true)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

}

private final class CapturedMessages: Sendable {
    private let messages = Mutex<[(level: Logger.Level, text: String)]>([])
    var all: [(level: Logger.Level, text: String)] { messages.withLock { $0 } }
    func add(_ level: Logger.Level, _ text: String) { messages.withLock { $0.append((level, text)) } }
}

private struct CapturingLogHandler: LogHandler {
    let messages: CapturedMessages
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        messages.add(event.level, "\(event.message)")
    }
}
