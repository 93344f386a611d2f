import Foundation
/// A problem found in a configuration file, printed as `file:line:column: message`.
public struct ConfigDiagnostic: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    /// Dotted key path, e.g. `routers.time.rule`; empty for file-level problems.
    public var keyPath: String
    public var message: String

    public init(file: String, line: Int, column: Int, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        let prefix = keyPath.isEmpty ? "" : "\(keyPath): "
        return "\(file):\(line):\(column): \(prefix)\(message)"
    }
}

/// Every problem of a configuration file at once, in file order.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]

    public init(_ diagnostics: [ConfigDiagnostic]) {
        self.diagnostics = diagnostics.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }

    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}

/// Gathers problems while a file is read, so validation reports all of them rather than the first.
final class DiagnosticCollector {
    let file: String
    private(set) var diagnostics: [ConfigDiagnostic] = []

    init(file: String) {
        self.file = file
    }

    private var ignoredMarker: String?

    func report(_ message: String, keyPath: String, at position: SourcePosition) {
        var keyPath = keyPath
        var message = message
        if let marker = ignoredMarker {
            // A problem of the stand-in key itself (e.g. "unknown key"): the duplicate was reported.
            if keyPath.split(separator: ".").last?.contains(marker) == true || (message.contains("unknown key") && message.contains(marker)) { return }
            keyPath = Self.removing(marker, from: keyPath)
            message = Self.removing(marker, from: message)
        }
        diagnostics.append(ConfigDiagnostic(file: file, line: position.line, column: position.column, keyPath: keyPath, message: message))
    }

    /// From now on, diagnostics about keys renamed with `marker` are left out (see
    /// `ConfigurationLoader.renamingLaterOccurrences`), and the marker is removed from key paths.
    func ignoreKeysContaining(_ marker: String) {
        ignoredMarker = marker
    }

    private static func removing(_ marker: String, from text: String) -> String {
        var result = text
        while let range = result.range(of: marker) {
            var end = range.upperBound
            while end < result.endIndex, result[end].isNumber { end = result.index(after: end) }
            result.removeSubrange(range.lowerBound..<end)
        }
        return result
    }
}

public struct SourcePosition: Sendable, Equatable {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    static let start = SourcePosition(line: 1, column: 1)
}
