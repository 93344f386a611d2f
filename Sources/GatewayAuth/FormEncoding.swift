package import Foundation

/// Builds `application/x-www-form-urlencoded` text (for redirects).
package enum FormEncoding {
    package static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    package static func encode(_ pairs: [(String, String?)]) -> String {
        pairs.compactMap { name, value in
            guard let value else { return nil }
            return "\(escape(name))=\(escape(value))"
        }.joined(separator: "&")
    }

    package static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }

    /// `base` with `pairs` appended to its query (RFC 6749 §4.1.2: keep the redirect URI's own query).
    package static func appending(_ pairs: [(String, String?)], to base: String) -> String {
        let separator = base.contains("?") ? "&" : "?"
        return base + separator + encode(pairs)
    }
}
