import Foundation

/// A value that may name where a secret lives instead of holding it: `env://NAME` (the gateway's
/// environment), `file:///path` (the file's first line, trimmed: Docker and Kubernetes secrets),
/// or a literal. Resolved when the configuration is loaded, so a reload re-reads them.
enum SecretReference {
    enum Failure: Error, Equatable {
        case unsetVariable(String)
        case unreadableFile(String, reason: String)
        case emptyFile(String)

        var message: String {
            switch self {
            case .unsetVariable(let name): "the environment variable \(name) is not set"
            case .unreadableFile(let path, let reason): "cannot read \(path): \(reason)"
            case .emptyFile(let path): "\(path) is empty"
            }
        }
    }

    static func resolve(_ text: String, environment: [String: String]) throws(Failure) -> String {
        if text.hasPrefix("env://") {
            let name = String(text.dropFirst("env://".count))
            guard let value = environment[name], !value.isEmpty else { throw .unsetVariable(name) }
            return value
        }
        if text.hasPrefix("file://") {
            let path = String(text.dropFirst("file://".count))
            let contents: String
            do { contents = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw .unreadableFile(path, reason: (error as NSError).localizedFailureReason ?? "not readable as UTF-8 text")
            }
            let line = contents.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw .emptyFile(path) }
            return trimmed
        }
        return text
    }
}
