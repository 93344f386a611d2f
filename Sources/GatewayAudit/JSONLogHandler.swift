import Foundation
public import Logging
import Synchronization

/// `log.format: json`: one JSON object per line on standard error, with `time` (RFC 3339, UTC,
/// milliseconds), `level`, `logger` (the label), `message`, `source` and the metadata as fields
/// (nested metadata as objects and arrays). Log shippers read it without a parsing rule.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let (level, message, explicit, source) = (event.level, event.message, event.metadata, event.source)
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let explicit { fields.merge(explicit) { _, new in new } }
        var line = "{\"time\":" + JSONText.quoted(JSONText.timestamp(Date())) + ",\"level\":" + JSONText.quoted(level.rawValue)
            + ",\"logger\":" + JSONText.quoted(label) + ",\"message\":" + JSONText.quoted(message.description) + ",\"source\":" + JSONText.quoted(source)
        // Metadata never replaces the fields above (a key named "message" keeps its own name as "meta.message").
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let name = ["time", "level", "logger", "message", "source"].contains(key) ? "meta." + key : key
            line += "," + JSONText.quoted(name) + ":" + Self.json(value)
        }
        line += "}\n"
        Self.output.withLock { _ in
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    /// One writer at a time, so lines from different threads never interleave.
    private static let output = Mutex<Void>(())

    public static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): JSONText.quoted(text)
        case .stringConvertible(let convertible): JSONText.quoted(convertible.description)
        case .array(let values): "[" + values.map(json).joined(separator: ",") + "]"
        case .dictionary(let entries): "{" + entries.sorted(by: { $0.key < $1.key }).map { JSONText.quoted($0.key) + ":" + json($0.value) }.joined(separator: ",") + "}"
        }
    }
}
