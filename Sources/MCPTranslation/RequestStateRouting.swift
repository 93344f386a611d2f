import GatewayStore

/// Every `requestState` the gateway hands a 2026-07-28 client (a parked request's handle, a tagged
/// child state) starts with the instance that issued it: `mcpgw@<instance>~<handle>`. A retry that
/// reaches another instance of the cluster is sent to that one, or answered precisely when that
/// instance is gone (the client sends the request again without the state). Routing only: the
/// handle itself stays bound to its caller by whoever issued it.
package enum RequestStateRouting {
    package static let prefix = "mcpgw@"

    /// `state` as this process hands it out.
    package static func tag(_ state: String, instance: String = ProcessInstance.id) -> String {
        prefix + instance + "~" + state
    }

    /// The issuing instance and the handle of a routed state; nil for any other state.
    package static func split(_ state: String) -> (instance: String, handle: String)? {
        guard state.hasPrefix(prefix) else { return nil }
        let rest = state.dropFirst(prefix.count)
        guard let separator = rest.firstIndex(of: "~") else { return nil }
        let instance = String(rest[..<separator])
        guard !instance.isEmpty, instance.count <= 64 else { return nil }
        return (instance, String(rest[rest.index(after: separator)...]))
    }

    /// The handle of a state this process issued (routed states of other instances, and states
    /// that were never routed, as they are: their own checks refuse them).
    package static func local(_ state: String) -> String {
        guard let (instance, handle) = split(state), instance == ProcessInstance.id else { return state }
        return handle
    }
}
