package import HTTPTypes

/// The bearer token of an `Authorization` header (RFC 6750 §2.1), scheme matched without case.
package enum BearerToken {
    package static func from(_ fields: HTTPFields) -> String? {
        guard let header = fields[.authorization], header.utf8.count > 7 else { return nil }
        let scheme = header.utf8.prefix(7)
        // "Bearer " compared without case and without allocating.
        guard zip(scheme, "bearer ".utf8).allSatisfy({ ($0 | 0x20) == $1 }) else { return nil }
        var token = header.dropFirst(7)
        while token.first == " " || token.first == "\t" { token.removeFirst() }
        while token.last == " " || token.last == "\t" { token.removeLast() }
        return token.isEmpty ? nil : String(token)
    }

}
