import GatewayConfig

/// A group service as a router serves it: its settings and its members compiled as routes of
/// their own (named `<router>/<member>`, so upstream sessions, pools and metrics keep them apart),
/// which the era dispatch serves like any route.
final class GroupRoute: Sendable {
    struct Member: Sendable {
        let name: String
        let route: CompiledRoute
    }

    let configuration: GroupServiceConfiguration
    let members: [Member]
    /// Each member's `tags`, for `broadcast__by_tag__<tag>`.
    let tags: [String: [String]]
    /// One member passed through as it is (no merged lists, no names changed): how an
    /// OAuth-protected HTTP service is served to session-based clients, so that their session is
    /// the gateway's own (it exists before the user has connected) and the upstream session is
    /// opened with the user's token at the first request that has one.
    let passthrough: Bool

    init(configuration: GroupServiceConfiguration, members: [Member], tags: [String: [String]], passthrough: Bool = false) {
        self.configuration = configuration
        self.members = members
        self.tags = tags
        self.passthrough = passthrough
    }

    func member(_ name: String) -> Member? { members.first { $0.name == name } }
}
