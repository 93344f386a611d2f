/// Parses durations written as `90s`, `10m`, `1h30m`, `500ms`, `2d`, or a bare number of seconds.
public enum DurationSyntax {
    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Int64(trimmed), seconds >= 0 { return .seconds(seconds) }
        var total = Duration.zero
        var index = trimmed.startIndex
        var sawComponent = false
        while index < trimmed.endIndex {
            let numberStart = index
            while index < trimmed.endIndex, trimmed[index].isNumber || trimmed[index] == "." {
                index = trimmed.index(after: index)
            }
            guard numberStart < index, let value = Double(trimmed[numberStart..<index]) else { return nil }
            let unitStart = index
            while index < trimmed.endIndex, trimmed[index].isLetter {
                index = trimmed.index(after: index)
            }
            let unit = trimmed[unitStart..<index]
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86400
            default: return nil
            }
            total += .milliseconds(Int64((value * scale * 1000).rounded()))
            sawComponent = true
        }
        return sawComponent ? total : nil
    }
}

/// Parses byte sizes written as `4MiB`, `512KiB`, `1MB`, `1GiB` or a bare number of bytes.
public enum ByteSizeSyntax {
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let bytes = Int(trimmed), bytes >= 0 { return bytes }
        let digits = trimmed.prefix { $0.isNumber }
        guard let value = Int(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        let multipliers: [String: Int] = [
            "B": 1, "KB": 1000, "MB": 1_000_000, "GB": 1_000_000_000,
            "KiB": 1024, "MiB": 1024 * 1024, "GiB": 1024 * 1024 * 1024,
        ]
        guard let multiplier = multipliers[unit] else { return nil }
        return value * multiplier
    }
}

extension Duration {
    /// Whole seconds, rounded down; for TTLs and headers such as `Retry-After`.
    public var wholeSeconds: Int64 { components.seconds }

    public var timeInterval: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

import Foundation
