import GatewayAuth
import Hummingbird
import MCPMessages

/// An MCP request as the pipeline hands it to its transport: the request and its context, with
/// what the stages established (route, verified caller, parsed call) no longer optional.
struct MCPExchange: Sendable {
    let request: Request
    let context: GatewayRequestContext
    let route: CompiledRoute
    /// The verified caller on protected routers; nil on `auth: none` ones.
    let caller: VerifiedCaller?
    let call: MCPCall

    /// Who sessions created by this request belong to.
    var owner: SessionOwner { SessionOwner(route: route, caller: caller) }
}
