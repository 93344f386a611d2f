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

    init(configuration: GroupServiceConfiguration, members: [Member], tags: [String: [String]]) {
        self.configuration = configuration
        self.members = members
        self.tags = tags
    }

    func member(_ name: String) -> Member? { members.first { $0.name == name } }
}
