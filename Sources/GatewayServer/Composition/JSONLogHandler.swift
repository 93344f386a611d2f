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
        var line = "{\"time\":" + Self.quoted(Self.timestamp()) + ",\"level\":" + Self.quoted(level.rawValue)
            + ",\"logger\":" + Self.quoted(label) + ",\"message\":" + Self.quoted(message.description) + ",\"source\":" + Self.quoted(source)
        // Metadata never replaces the fields above (a key named "message" keeps its own name as "meta.message").
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let name = ["time", "level", "logger", "message", "source"].contains(key) ? "meta." + key : key
            line += "," + Self.quoted(name) + ":" + Self.json(value)
        }
        line += "}\n"
        Self.output.withLock { _ in
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    /// One writer at a time, so lines from different threads never interleave.
    private static let output = Mutex<Void>(())

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): quoted(text)
        case .stringConvertible(let convertible): quoted(convertible.description)
        case .array(let values): "[" + values.map(json).joined(separator: ",") + "]"
        case .dictionary(let entries): "{" + entries.sorted(by: { $0.key < $1.key }).map { quoted($0.key) + ":" + json($0.value) }.joined(separator: ",") + "}"
        }
    }

    /// A JSON string literal (RFC 8259): quotes, backslashes and control characters escaped.
    static func quoted(_ text: String) -> String {
        var result = "\""
        result.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case let control where control.value < 0x20:
                result += "\\u" + String(repeating: "0", count: 4 - String(control.value, radix: 16).count) + String(control.value, radix: 16)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// `2026-12-04T13:09:56.123Z`
    static func timestamp(_ date: Date = Date()) -> String {
        // Whole milliseconds first (binary fractions: .123 is 0.12299…), then split.
        let totalMillis = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var whole = time_t(totalMillis / 1000)
        let millis = Int(totalMillis % 1000)
        var parts = tm()
        gmtime_r(&whole, &parts)
        func pad(_ value: Int32, _ width: Int = 2) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec)).\(pad(Int32(millis), 3))Z"
    }
}
