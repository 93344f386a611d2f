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

    @Test func linesAreWrittenWithoutAFlushWithinTheBatchWindow() async throws {
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
}
