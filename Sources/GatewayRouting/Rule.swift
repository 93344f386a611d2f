import Foundation

/// A compiled Traefik v3 router rule, e.g. ``Host(`a.example.com`) && PathPrefix(`/time`)``.
public indirect enum Rule: Sendable, Equatable {
    case matcher(Matcher)
    case and(Rule, Rule)
    case or(Rule, Rule)
    case not(Rule)

    /// Parses a rule; the error carries the character offset of the problem inside `text`.
    public init(parsing text: String) throws(RuleSyntaxError) {
        var parser = RuleParser(text: text)
        self = try parser.parseRule()
    }

    public func matches(_ request: some RoutableRequest) -> Bool {
        switch self {
        case .matcher(let matcher): matcher.matches(request)
        case .and(let lhs, let rhs): lhs.matches(request) && rhs.matches(request)
        case .or(let lhs, let rhs): lhs.matches(request) || rhs.matches(request)
        case .not(let inner): !inner.matches(request)
        }
    }

    /// Whether the rule reads nothing of a request but its host and path (no method, header or
    /// query matcher anywhere): two requests with the same host and path match it alike.
    public var readsOnlyHostAndPath: Bool {
        switch self {
        case .matcher(.host), .matcher(.hostRegexp), .matcher(.path), .matcher(.pathPrefix), .matcher(.pathRegexp): true
        case .matcher: false
        case .and(let lhs, let rhs), .or(let lhs, let rhs): lhs.readsOnlyHostAndPath && rhs.readsOnlyHostAndPath
        case .not(let inner): inner.readsOnlyHostAndPath
        }
    }

    /// Every host name a `Host` matcher of the rule names (outside `!`).
    public var hostNames: [String] {
        switch self {
        case .matcher(.host(let host)): [host]
        case .matcher: []
        case .and(let lhs, let rhs), .or(let lhs, let rhs): lhs.hostNames + rhs.hostNames
        case .not: []
        }
    }

    /// Whether every matching request must satisfy a `HostRegexp` matcher.
    public var requiresHostPattern: Bool {
        requiredMatchers.contains { if case .hostRegexp = $0 { true } else { false } }
    }

    /// Matchers that every matching request must satisfy (those reachable through `&&` only).
    public var requiredMatchers: [Matcher] {
        switch self {
        case .matcher(let matcher): [matcher]
        case .and(let lhs, let rhs): lhs.requiredMatchers + rhs.requiredMatchers
        case .or, .not: []
        }
    }
}

/// One matcher of a rule. Host and header names compare case-insensitively, paths exactly.
public enum Matcher: Sendable, Equatable {
    case host(String)
    case hostRegexp(RulePattern)
    case path(String)
    case pathPrefix(String)
    case pathRegexp(RulePattern)
    case method(String)
    case header(name: String, value: String)
    case headerRegexp(name: String, pattern: RulePattern)
    case query(name: String, value: String?)

    public func matches(_ request: some RoutableRequest) -> Bool {
        switch self {
        case .host(let host):
            return request.host == host
        case .hostRegexp(let pattern):
            return pattern.matches(request.host)
        case .path(let path):
            return request.path == path
        case .pathPrefix(let prefix):
            return request.path.hasPrefix(prefix)
        case .pathRegexp(let pattern):
            return pattern.matches(request.path)
        case .method(let method):
            return request.method == method
        case .header(let name, let value):
            return request.headerValues(name).contains(value)
        case .headerRegexp(let name, let pattern):
            return request.headerValues(name).contains { pattern.matches($0) }
        case .query(let name, let value):
            return request.queryItems.contains { item in
                item.name == name && (value == nil || item.value == value)
            }
        }
    }
}

/// The parts of an HTTP request that rules look at.
public protocol RoutableRequest {
    /// Upper-case method, e.g. `POST`.
    var method: String { get }
    /// Lower-cased host without port (from `Host` / `:authority`).
    var host: String { get }
    /// The request path without query string (normalized as fronting proxies do, see `RequestPath`).
    var path: String { get }
    var queryItems: [(name: String, value: String)] { get }
    /// Values of a header; `name` is matched case-insensitively.
    func headerValues(_ name: String) -> [String]
}

/// A regular expression from a rule; compiled once at configuration time.
public struct RulePattern: @unchecked Sendable, Equatable {
    // NSRegularExpression is documented as safe to use from several threads at once.
    private let regex: NSRegularExpression
    public let source: String

    public init(_ source: String, caseInsensitive: Bool = false) throws {
        self.source = source
        self.regex = try NSRegularExpression(pattern: source, options: caseInsensitive ? [.caseInsensitive] : [])
    }

    public func matches(_ value: String) -> Bool {
        let range = NSRange(value.startIndex..<value.endIndex, in: value)
        return regex.firstMatch(in: value, options: [], range: range) != nil
    }

    public static func == (lhs: RulePattern, rhs: RulePattern) -> Bool { lhs.source == rhs.source }
}

public struct RuleSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// Offset in characters from the start of the rule text.
    public var offset: Int

    public init(_ message: String, at offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "\(message) (at character \(offset + 1) of the rule)" }
}
