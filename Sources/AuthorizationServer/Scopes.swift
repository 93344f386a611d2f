/// The gateway's scope vocabulary: deliberately one scope. `mcp` lets a token's holder use the MCP
/// endpoint named by the token's audience. Clients ask for odd scopes (Claude has asked for
/// `claudeai`, and copies `scopes_supported` into its requests), so unknown scopes are dropped from
/// the grant instead of failing the request.
public enum Scopes {
    public static let mcp = "mcp"
    public static let supported = [mcp]

    /// The scope granted for a request: the known requested scopes, or `mcp` when none is known.
    public static func grant(requested: String?) -> String {
        let known = Set((requested ?? "").split(separator: " ").map(String.init)).intersection(supported)
        return known.isEmpty ? mcp : known.sorted().joined(separator: " ")
    }

    /// A narrowing of `granted` (RFC 6749 §6 refresh with `scope`), or nil if it asks for more.
    public static func narrow(granted: String, requested: String?) -> String? {
        guard let requested, !requested.isEmpty else { return granted }
        let grantedSet = Set(granted.split(separator: " ").map(String.init))
        let asked = Set(requested.split(separator: " ").map(String.init)).intersection(supported)
        guard asked.isSubset(of: grantedSet) else { return nil }
        return asked.isEmpty ? granted : asked.sorted().joined(separator: " ")
    }
}
