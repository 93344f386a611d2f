public import Foundation
import GatewayRouting
import Yams

/// Reads gateway.yaml into a ``GatewayConfiguration``, reporting every problem with its position.
public struct ConfigurationLoader: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The whole process environment (for `${VAR}`): secrets among it. Never part of a description,
    /// which loggers print (service-lifecycle prints its services at debug).
    public var environment: [String: String]

    public var description: String { "ConfigurationLoader(\(environment.count) environment variables)" }
    public var debugDescription: String { description }
    /// What `dump` and reflection show: the count, never the variables.
    public var customMirror: Mirror { Mirror(self, children: ["environment": "\(environment.count) variables"]) }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    public func load(path: String) throws(ConfigError) -> GatewayConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError([ConfigDiagnostic(file: path, line: 1, column: 1, keyPath: "", message: "cannot read the file: \(error.localizedDescription)")])
        }
        return try load(yaml: text, file: path)
    }

    public func load(yaml text: String, file: String = "gateway.yaml") throws(ConfigError) -> GatewayConfiguration {
        let collector = DiagnosticCollector(file: file)
        var root: Node?
        // libyaml stops at the first mapping with a duplicate key. Each duplicate is reported, its
        // later occurrences renamed out of the way, and the file read again, so one `check` lists
        // every problem of the file, not just the first duplicate.
        var source = text
        var renamed = false
        for attempt in 0...Self.maxDuplicateRounds {
            do {
                root = try Yams.compose(yaml: source)
                break
            } catch let error as YamlError {
                Self.report(yamlError: error, text: source, into: collector)
                guard case .duplicatedKeysInMapping(let duplicates, let context) = error, attempt < Self.maxDuplicateRounds,
                      let next = Self.renamingLaterOccurrences(of: duplicates, in: source, mark: context.mark)
                else { throw ConfigError(collector.diagnostics) }
                source = next
                renamed = true
            } catch {
                collector.report("cannot parse YAML: \(error)", keyPath: "", at: .start)
                throw ConfigError(collector.diagnostics)
            }
        }
        if renamed { collector.ignoreKeysContaining(Self.duplicateMarker) }
        guard let root else {
            collector.report("the file is empty; it needs at least entryPoints, publicURL, routers and services", keyPath: "", at: .start)
            throw ConfigError(collector.diagnostics)
        }
        let reader = NodeReader(collector: collector, expander: EnvironmentExpander(environment: environment))
        let configuration = ConfigurationBuilder(reader: reader).build(root: root)
        guard collector.diagnostics.isEmpty, let configuration else {
            throw ConfigError(collector.diagnostics)
        }
        return configuration
    }

    static let maxDuplicateRounds = 32
    /// Appended to the renamed later occurrences of a duplicate key; diagnostics about those
    /// stand-in keys are not reported (the duplicate itself was).
    static let duplicateMarker = "\u{2063}duplicate"

    /// A key as the file spells it (without the marker a repeated key was renamed with).
    static func displayName(_ key: String) -> String {
        key.range(of: duplicateMarker).map { String(key[..<$0.lowerBound]) } ?? key
    }

    /// `text` with the later occurrences of `keys` in the mapping whose first duplicate key is at
    /// `mark` renamed (block mappings only); nil when nothing could be renamed.
    static func renamingLaterOccurrences(of keys: [String], in text: String, mark: Mark) -> String? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var changed = false
        for key in keys {
            for index in occurrences(of: key, in: lines, mark: mark).dropFirst() {
                let line = lines[index]
                let indent = line.prefix { $0 == " " }.count
                let content = line.dropFirst(indent)
                guard let spelling = Self.spellings(key).first(where: { content.hasPrefix($0) }) else { continue }
                lines[index] = String(repeating: " ", count: indent) + "\"\(key)\(duplicateMarker)\(index)\":" + content.dropFirst(spelling.count)
                changed = true
            }
        }
        return changed ? lines.joined(separator: "\n") : nil
    }

    private static func spellings(_ key: String) -> [String] { ["\(key):", "\"\(key)\":", "'\(key)':"] }

    /// Line indexes of `key` in the block mapping holding the key at `mark`: the lines at that
    /// indentation between the mapping's start and its end (the first less indented line).
    static func occurrences(of key: String, in lines: [String], mark: Mark) -> [Int] {
        let indent = mark.column - 1
        func indentation(_ line: String) -> Int { line.prefix { $0 == " " }.count }
        func isContent(_ line: String) -> Bool {
            let content = line.dropFirst(indentation(line))
            return !content.isEmpty && !content.hasPrefix("#")
        }
        var start = min(max(0, mark.line - 1), lines.count)
        while start > 0, !isContent(lines[start - 1]) || indentation(lines[start - 1]) >= indent { start -= 1 }
        var found: [Int] = []
        var index = start
        while index < lines.count {
            let line = lines[index]
            if isContent(line), indentation(line) < indent, index >= mark.line - 1 { break }
            if isContent(line), indentation(line) < indent, index < mark.line - 1 { found.removeAll() }
            if indentation(line) == indent, Self.spellings(key).contains(where: { line.dropFirst(indent).hasPrefix($0) }) {
                found.append(index)
            }
            index += 1
        }
        return found
    }

    private static func report(yamlError: YamlError, text: String, into collector: DiagnosticCollector) {
        switch yamlError {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            collector.report("invalid YAML: \(problem)", keyPath: "", at: SourcePosition(line: mark.line, column: mark.column))
        case .duplicatedKeysInMapping(let duplicates, let context):
            // Point at every repeated occurrence in that mapping.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            let column = context.mark.column
            for key in duplicates {
                let occurrences = Self.occurrences(of: key, in: lines, mark: context.mark).map { $0 + 1 }
                if occurrences.count > 1 {
                    for line in occurrences.dropFirst() {
                        collector.report("duplicate key \"\(key)\" (first defined at line \(occurrences[0])); names must be unique", keyPath: "", at: SourcePosition(line: line, column: column))
                    }
                } else {
                    collector.report("duplicate key \"\(key)\"; names must be unique", keyPath: "", at: SourcePosition(line: context.mark.line, column: context.mark.column))
                }
            }
        default:
            collector.report("invalid YAML: \(yamlError)", keyPath: "", at: .start)
        }
    }
}

/// Typed access to YAML nodes: every accessor reports its own problems and returns nil on failure,
/// so one pass over the file finds every mistake.
struct NodeReader {
    let collector: DiagnosticCollector
    let expander: EnvironmentExpander

    func position(_ node: Node) -> SourcePosition {
        guard let mark = node.mark else { return .start }
        return SourcePosition(line: mark.line, column: mark.column)
    }

    func report(_ message: String, _ keyPath: String, _ node: Node) {
        collector.report(message, keyPath: keyPath, at: position(node))
    }

    func isNull(_ node: Node) -> Bool {
        if case .scalar(let scalar) = node, scalar.tag == .implicit || scalar.tag.rawValue == Tag.Name.null.rawValue {
            return scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
        }
        return false
    }

    /// A value as JSON would hold it (strings, numbers, booleans, null, lists, mappings), with
    /// `${VAR}` expanded in strings; nil (reported) for what JSON cannot hold.
    func jsonValue(_ node: Node, _ keyPath: String) -> Any? {
        switch node {
        case .scalar(let scalar):
            if isNull(node) { return NSNull() }
            if scalar.style == .plain {
                if ["true", "True", "TRUE"].contains(scalar.string) { return true }
                if ["false", "False", "FALSE"].contains(scalar.string) { return false }
                if let integer = Int(scalar.string) { return integer }
                if let number = Double(scalar.string), scalar.string.contains(where: { $0.isNumber }) { return number }
            }
            return string(node, keyPath)
        case .sequence(let sequence):
            var list: [Any] = []
            for (index, element) in sequence.enumerated() {
                guard let value = jsonValue(element, "\(keyPath)[\(index)]") else { return nil }
                list.append(value)
            }
            return list
        case .mapping(let mapping):
            var object: [String: Any] = [:]
            for (keyNode, value) in mapping {
                guard case .scalar(let key) = keyNode else {
                    report("keys must be plain strings", keyPath, keyNode)
                    return nil
                }
                guard let converted = jsonValue(value, "\(keyPath).\(key.string)") else { return nil }
                object[key.string] = converted
            }
            return object
        case .alias:
            report("YAML aliases are not supported here", keyPath, node)
            return nil
        }
    }

    /// The mapping's entries by key; unknown keys are reported with a suggestion.
    func mapping(_ node: Node, _ keyPath: String, allowed: [String]? = nil) -> [String: Node]? {
        guard case .mapping(let mapping) = node else {
            if isNull(node) { return [:] }
            report("expected a mapping of keys to values", keyPath, node)
            return nil
        }
        var entries: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                report("keys must be plain strings", keyPath, keyNode)
                continue
            }
            let key = scalar.string
            if let allowed, !allowed.contains(key) {
                let child = keyPath.isEmpty ? key : "\(keyPath).\(key)"
                var message = "unknown key \"\(key)\""
                if let suggestion = Self.closest(to: key, in: allowed) {
                    message += "; did you mean \"\(suggestion)\"?"
                } else {
                    message += "; allowed here: \(allowed.joined(separator: ", "))"
                }
                report(message, child, keyNode)
                continue
            }
            entries[key] = value
        }
        return entries
    }

    /// Mapping entries in file order (for routers and services, whose order is meaningful to readers).
    func orderedEntries(_ node: Node, _ keyPath: String) -> [(key: String, keyNode: Node, value: Node)] {
        guard case .mapping(let mapping) = node else {
            if !isNull(node) { report("expected a mapping of names to definitions", keyPath, node) }
            return []
        }
        var entries: [(String, Node, Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                report("names must be plain strings", keyPath, keyNode)
                continue
            }
            entries.append((scalar.string, keyNode, value))
        }
        return entries
    }

    func string(_ node: Node, _ keyPath: String) -> String? {
        guard case .scalar(let scalar) = node else {
            report("expected a single value, not a \(Self.kind(of: node))", keyPath, node)
            return nil
        }
        do {
            return try expander.expand(scalar.string)
        } catch {
            switch error {
            case .unset(let name):
                report("environment variable \(name) is not set (write ${\(name):-default} to give a default)", keyPath, node)
            case .malformed(let message):
                report(message, keyPath, node)
            }
        }
        return nil
    }

    func nonEmptyString(_ node: Node, _ keyPath: String) -> String? {
        guard let value = string(node, keyPath) else { return nil }
        guard !value.isEmpty else {
            report("must not be empty", keyPath, node)
            return nil
        }
        return value
    }

    func stringList(_ node: Node, _ keyPath: String) -> [String]? {
        guard case .sequence(let sequence) = node else {
            if isNull(node) { return [] }
            report("expected a list, e.g. [\"a\", \"b\"]", keyPath, node)
            return nil
        }
        var values: [String] = []
        var failed = false
        for (index, element) in sequence.enumerated() {
            if let value = string(element, "\(keyPath)[\(index)]") { values.append(value) } else { failed = true }
        }
        return failed ? nil : values
    }

    func stringMap(_ node: Node, _ keyPath: String) -> [(key: String, value: String)]? {
        var result: [(String, String)] = []
        var failed = false
        for entry in orderedEntries(node, keyPath) {
            if let value = string(entry.value, "\(keyPath).\(entry.key)") { result.append((entry.key, value)) } else { failed = true }
        }
        return failed ? nil : result
    }

    func integer(_ node: Node, _ keyPath: String, range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, keyPath) else { return nil }
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
            report("expected a whole number, got \"\(text)\"", keyPath, node)
            return nil
        }
        guard range.contains(value) else {
            report("must be between \(range.lowerBound) and \(range.upperBound), got \(value)", keyPath, node)
            return nil
        }
        return value
    }

    func boolean(_ node: Node, _ keyPath: String) -> Bool? {
        guard let text = string(node, keyPath) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            report("expected true or false, got \"\(text)\"", keyPath, node)
            return nil
        }
    }

    func duration(_ node: Node, _ keyPath: String) -> Duration? {
        guard let text = string(node, keyPath) else { return nil }
        guard let value = DurationSyntax.parse(text) else {
            report("expected a duration such as \"90s\", \"10m\" or \"1h\", got \"\(text)\"", keyPath, node)
            return nil
        }
        return value
    }

    func byteSize(_ node: Node, _ keyPath: String) -> Int? {
        guard let text = string(node, keyPath) else { return nil }
        guard let value = ByteSizeSyntax.parse(text), value > 0 else {
            report("expected a size such as \"4MiB\", \"512KiB\" or a number of bytes, got \"\(text)\"", keyPath, node)
            return nil
        }
        return value
    }

    /// Column offset of a scalar's text inside its line (quoted scalars start one column later).
    func contentColumn(_ node: Node) -> Int {
        guard case .scalar(let scalar) = node else { return position(node).column }
        let quoted = scalar.style == .singleQuoted || scalar.style == .doubleQuoted
        return position(node).column + (quoted ? 1 : 0)
    }

    static func kind(of node: Node) -> String {
        switch node {
        case .mapping: "mapping"
        case .sequence: "list"
        case .scalar: "value"
        case .alias: "alias"
        }
    }

    static func closest(to key: String, in candidates: [String]) -> String? {
        let scored = candidates.map { ($0, editDistance($0.lowercased(), key.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, key.count / 3) else { return nil }
        return best.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
