import Foundation
package import Hummingbird

/// `application/x-www-form-urlencoded` fields (query strings and form bodies). OAuth parameters
/// must not repeat (RFC 6749 §3.1): repeated names are kept so callers can refuse them.
package struct FormFields: Sendable {
    private(set) var values: [String: String] = [:]
    private(set) var repeated: Set<String> = []

    package init(_ encoded: Substring) {
        for pair in encoded.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]), !name.isEmpty else { continue }
            let value = parts.count > 1 ? (Self.decode(parts[1]) ?? "") : ""
            if values[name] != nil { repeated.insert(name) } else { values[name] = value }
        }
    }

    package init(query request: Request) {
        self.init(Substring(request.uri.query ?? ""))
    }

    package static func body(_ request: inout Request, limit: Int = 64 * 1024) async -> FormFields? {
        guard let buffer = try? await request.collectBody(upTo: limit) else { return nil }
        return FormFields(Substring(String(buffer: buffer)))
    }

    package subscript(_ name: String) -> String? {
        guard let value = values[name], !value.isEmpty else { return nil }
        return value
    }

    private static func decode(_ text: Substring) -> String? {
        String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}

/// Cookies sent by the browser.
package enum Cookies {
    package static func value(_ name: String, in request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if pair.count == 2, pair[0] == name { return String(pair[1]) }
            }
        }
        return nil
    }
}
