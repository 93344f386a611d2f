import Foundation
import Testing
@testable import GatewayServer

/// The configuration watcher's view of a file: a change of content, size or inode (an editor's
/// rename over it, a ConfigMap swap) is a change; reading again without one is not.
@Suite struct FileFingerprintTests {
    @Test func aFileReadsTheSameUntilItChanges() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fingerprint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("gateway.yaml").path
        #expect(FileFingerprint.read(path) == nil)

        try Data("routers: {}\n".utf8).write(to: URL(fileURLWithPath: path))
        let first = try #require(FileFingerprint.read(path))
        #expect(first.size == 12 && first.inode != 0 && first.modified > 1_700_000_000)
        #expect(FileFingerprint.read(path) == first)

        // Replaced by a rename, as editors and Kubernetes do: another inode.
        let replacement = directory.appendingPathComponent("new.yaml").path
        try Data("routers: {}\n".utf8).write(to: URL(fileURLWithPath: replacement))
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: replacement, toPath: path)
        let renamed = try #require(FileFingerprint.read(path))
        #expect(renamed.inode != first.inode)

        // Written in place with another size.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("# more\n".utf8))
        try handle.close()
        let grown = try #require(FileFingerprint.read(path))
        #expect(grown.inode == renamed.inode && grown.size == 19 && grown != renamed)
    }
}
