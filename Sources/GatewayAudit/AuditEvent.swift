public import Foundation

/// One line of the audit log: an event name and its fields, written as one JSON object with
/// `time` (RFC 3339, UTC, milliseconds) and `event` first. Fields with no value are left out.
public struct AuditEvent: Sendable {
    /// A field's value.
    public enum Value: Sendable, Equatable {
        case string(String)
        case integer(Int64)
        /// Already JSON (tool arguments, after redaction).
        case json(String)
    }

    public var name: String
    public var fields: [(String, Value)]
    public var time: Date

    public init(_ name: String, time: Date = Date(), _ fields: [(String, Value?)]) {
        self.name = name
        self.time = time
        self.fields = fields.compactMap { key, value in value.map { (key, $0) } }
    }

    /// The line, newline included.
    public var line: String {
        var text = "{\"time\":" + JSONText.quoted(JSONText.timestamp(time)) + ",\"event\":" + JSONText.quoted(name)
        for (key, value) in fields {
            text += "," + JSONText.quoted(key) + ":"
            switch value {
            case .string(let string): text += JSONText.quoted(string)
            case .integer(let number): text += String(number)
            case .json(let json): text += json
            }
        }
        return text + "}\n"
    }
}

/// Where security events and request records go. The gateway's `AuditLog` writes them to a file;
/// without `audit:` nothing is recorded.
public protocol AuditSink: Sendable {
    func record(_ event: AuditEvent)
}

/// Tool arguments as the audit log shows them.
public enum AuditArguments {
    /// `arguments` (raw JSON) with the value of every key containing one of `keys`
    /// (case-insensitive) replaced by "[redacted]", at any depth. Nil when it is not JSON.
    public static func redacted(_ json: String, keys: [String]) -> String? {
        guard let data = json.data(using: .utf8), let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return nil }
        let lowered = keys.map { $0.lowercased() }
        func redact(_ value: Any) -> Any {
            if let object = value as? [String: Any] {
                var result: [String: Any] = [:]
                for (key, inner) in object {
                    let sensitive = lowered.contains { !$0.isEmpty && key.lowercased().contains($0) }
                    result[key] = sensitive ? "[redacted]" : redact(inner)
                }
                return result
            }
            if let array = value as? [Any] { return array.map(redact) }
            return value
        }
        guard let out = try? JSONSerialization.data(withJSONObject: redact(value), options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes]) else { return nil }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The two pieces every JSON line the gateway writes is made of (the audit log, `log.format:
/// json`): string literals and timestamps.
public enum JSONText {
    /// A JSON string literal: quotes, backslashes and control characters escaped.
    public static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case let control where control.value < 0x20:
                let hex = String(control.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    public static func timestamp(_ date: Date) -> String {
        let totalMillis = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var whole = time_t(totalMillis / 1000)
        var parts = tm()
        gmtime_r(&whole, &parts)
        func pad(_ value: Int64, _ width: Int = 2) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(Int64(parts.tm_year) + 1900, 4))-\(pad(Int64(parts.tm_mon) + 1))-\(pad(Int64(parts.tm_mday)))T"
            + "\(pad(Int64(parts.tm_hour))):\(pad(Int64(parts.tm_min))):\(pad(Int64(parts.tm_sec))).\(pad(totalMillis % 1000, 3))Z"
    }
}
