/// Recursive-descent parser for Traefik v3 rule syntax:
///
///     rule    := or
///     or      := and ( "||" and )*
///     and     := unary ( "&&" unary )*
///     unary   := "!" unary | "(" or ")" | matcher
///     matcher := Name "(" argument ( "," argument )* ")"
///     argument:= `backtick string` | "double-quoted string"
struct RuleParser {
    static let supportedMatchers = ["Host", "HostRegexp", "Path", "PathPrefix", "PathRegexp", "Method", "Header", "HeaderRegexp", "Query"]

    private let characters: [Character]
    private var position = 0

    init(text: String) {
        self.characters = Array(text)
    }

    mutating func parseRule() throws(RuleSyntaxError) -> Rule {
        skipSpaces()
        guard position < characters.count else { throw RuleSyntaxError("the rule is empty", at: 0) }
        let rule = try parseOr()
        skipSpaces()
        if position < characters.count {
            throw RuleSyntaxError("unexpected \"\(characters[position])\"; expected \"&&\", \"||\" or the end of the rule", at: position)
        }
        return rule
    }

    private mutating func parseOr() throws(RuleSyntaxError) -> Rule {
        var rule = try parseAnd()
        while consume("||") {
            rule = .or(rule, try parseAnd())
        }
        return rule
    }

    private mutating func parseAnd() throws(RuleSyntaxError) -> Rule {
        var rule = try parseUnary()
        while consume("&&") {
            rule = .and(rule, try parseUnary())
        }
        return rule
    }

    private mutating func parseUnary() throws(RuleSyntaxError) -> Rule {
        skipSpaces()
        guard position < characters.count else {
            throw RuleSyntaxError("the rule ends where a matcher was expected", at: position)
        }
        if consume("!") {
            return .not(try parseUnary())
        }
        if consume("(") {
            let inner = try parseOr()
            guard consume(")") else { throw RuleSyntaxError("missing \")\"", at: position) }
            return inner
        }
        return .matcher(try parseMatcher())
    }

    private mutating func parseMatcher() throws(RuleSyntaxError) -> Matcher {
        skipSpaces()
        let nameStart = position
        while position < characters.count, characters[position].isLetter {
            position += 1
        }
        let name = String(characters[nameStart..<position])
        guard !name.isEmpty else {
            throw RuleSyntaxError("expected a matcher such as Host(`example.com`) or PathPrefix(`/x`), found \"\(characters[position])\"", at: nameStart)
        }
        guard Self.supportedMatchers.contains(name) else {
            throw RuleSyntaxError("unknown matcher \"\(name)\"; supported: \(Self.supportedMatchers.joined(separator: ", "))", at: nameStart)
        }
        guard consume("(") else { throw RuleSyntaxError("expected \"(\" after \(name)", at: position) }
        var arguments: [(value: String, offset: Int)] = []
        skipSpaces()
        if !peek(")") {
            repeat {
                arguments.append(try parseArgument())
            } while consume(",")
        }
        guard consume(")") else { throw RuleSyntaxError("expected \")\" to close \(name)(", at: position) }
        return try makeMatcher(name: name, arguments: arguments, at: nameStart)
    }

    private mutating func parseArgument() throws(RuleSyntaxError) -> (value: String, offset: Int) {
        skipSpaces()
        guard position < characters.count, characters[position] == "`" || characters[position] == "\"" else {
            throw RuleSyntaxError("expected a quoted argument (`value` or \"value\")", at: position)
        }
        let quote = characters[position]
        let start = position
        position += 1
        var value = ""
        while position < characters.count, characters[position] != quote {
            if quote == "\"", characters[position] == "\\", position + 1 < characters.count {
                position += 1
            }
            value.append(characters[position])
            position += 1
        }
        guard position < characters.count else { throw RuleSyntaxError("unterminated string", at: start) }
        position += 1
        skipSpaces()
        return (value, start + 1)
    }

    private func makeMatcher(name: String, arguments: [(value: String, offset: Int)], at offset: Int) throws(RuleSyntaxError) -> Matcher {
        func expect(_ count: Int) throws(RuleSyntaxError) {
            guard arguments.count == count else {
                throw RuleSyntaxError("\(name) takes \(count) argument\(count == 1 ? "" : "s"), got \(arguments.count)", at: offset)
            }
        }
        func pattern(_ argument: (value: String, offset: Int), caseInsensitive: Bool = false) throws(RuleSyntaxError) -> RulePattern {
            do {
                return try RulePattern(argument.value, caseInsensitive: caseInsensitive)
            } catch {
                throw RuleSyntaxError("invalid regular expression \"\(argument.value)\"", at: argument.offset)
            }
        }
        switch name {
        case "Host":
            try expect(1)
            let host = arguments[0].value.lowercased()
            guard !host.isEmpty, !host.contains("/"), !host.contains(" ") else {
                throw RuleSyntaxError("Host needs a host name such as `mcp.example.com`", at: arguments[0].offset)
            }
            return .host(host)
        case "HostRegexp":
            try expect(1)
            return .hostRegexp(try pattern(arguments[0], caseInsensitive: true))
        case "Path", "PathPrefix":
            try expect(1)
            let path = arguments[0].value
            guard path.hasPrefix("/") else {
                throw RuleSyntaxError("\(name) must start with \"/\"", at: arguments[0].offset)
            }
            return name == "Path" ? .path(path) : .pathPrefix(path)
        case "PathRegexp":
            try expect(1)
            return .pathRegexp(try pattern(arguments[0]))
        case "Method":
            try expect(1)
            let method = arguments[0].value.uppercased()
            guard !method.isEmpty, method.allSatisfy({ $0.isLetter }) else {
                throw RuleSyntaxError("Method needs an HTTP method such as `POST`", at: arguments[0].offset)
            }
            return .method(method)
        case "Header":
            try expect(2)
            return .header(name: arguments[0].value.lowercased(), value: arguments[1].value)
        case "HeaderRegexp":
            try expect(2)
            return .headerRegexp(name: arguments[0].value.lowercased(), pattern: try pattern(arguments[1]))
        case "Query":
            guard arguments.count == 1 || arguments.count == 2 else {
                throw RuleSyntaxError("Query takes 1 or 2 arguments, got \(arguments.count)", at: offset)
            }
            return .query(name: arguments[0].value, value: arguments.count == 2 ? arguments[1].value : nil)
        default:
            throw RuleSyntaxError("unknown matcher \"\(name)\"", at: offset)
        }
    }

    private mutating func skipSpaces() {
        while position < characters.count, characters[position].isWhitespace {
            position += 1
        }
    }

    private mutating func peek(_ token: String) -> Bool {
        skipSpaces()
        let tokenCharacters = Array(token)
        guard position + tokenCharacters.count <= characters.count else { return false }
        return Array(characters[position..<position + tokenCharacters.count]) == tokenCharacters
    }

    private mutating func consume(_ token: String) -> Bool {
        guard peek(token) else { return false }
        position += token.count
        return true
    }
}
