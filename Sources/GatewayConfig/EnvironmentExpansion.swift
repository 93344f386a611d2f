import Foundation
/// Expands `${VAR}` and `${VAR:-default}` (default used when VAR is unset or empty);
/// `$$` stands for a literal `$`.
public struct EnvironmentExpander: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public enum Failure: Error, Equatable {
        case unset(name: String)
        case malformed(String)
    }

    /// The whole process environment: secrets among it. Never part of a description, which
    /// loggers and error messages print.
    public let environment: [String: String]

    public init(environment: [String: String]) {
        self.environment = environment
    }

    public var description: String { "EnvironmentExpander(\(environment.count) environment variables)" }
    public var debugDescription: String { description }
    /// What `dump` and reflection show: the count, never the variables.
    public var customMirror: Mirror { Mirror(self, children: ["environment": "\(environment.count) variables"]) }

    public func expand(_ text: String) throws(Failure) -> String {
        guard text.contains("$") else { return text }
        var output = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            guard character == "$" else {
                output.append(character)
                index = text.index(after: index)
                continue
            }
            let next = text.index(after: index)
            if next < text.endIndex, text[next] == "$" {
                output.append("$")
                index = text.index(after: next)
                continue
            }
            guard next < text.endIndex, text[next] == "{" else {
                output.append("$")
                index = next
                continue
            }
            guard let close = text[next...].firstIndex(of: "}") else {
                throw .malformed("unterminated \"${\" in \"\(text)\"")
            }
            let body = text[text.index(after: next)..<close]
            let name: Substring
            let fallback: Substring?
            if let separator = body.range(of: ":-") {
                name = body[..<separator.lowerBound]
                fallback = body[separator.upperBound...]
            } else {
                name = body
                fallback = nil
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw .malformed("\"${\(body)}\" is not a valid variable reference; write ${NAME} or ${NAME:-default}")
            }
            if let value = environment[String(name)], !(fallback != nil && value.isEmpty) {
                output += value
            } else if let fallback {
                output += fallback
            } else {
                throw .unset(name: String(name))
            }
            index = text.index(after: close)
        }
        return output
    }
}
