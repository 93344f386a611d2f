import AuthorizationServer
package import GatewayConfig

/// Who the caller is, told to upstreams of protected routes (client copies are always dropped).
package enum IdentityHeaders {
    package static func fields(_ caller: VerifiedCaller, names: IdentityHeaderNames) -> [(name: String, value: String)] {
        var fields = [(names.user, caller.claims.login), (names.clientID, caller.claims.client_id)]
        if let email = caller.claims.email { fields.append((names.email, email)) }
        return fields
    }
}

