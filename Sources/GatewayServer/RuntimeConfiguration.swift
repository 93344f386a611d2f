import AuthorizationServer
import GatewayConfig
import GatewayRouting
import GatewayStdio
import GatewayUpstream
import Synchronization

/// What a router leads to once compiled.
enum RouteUpstream: Sendable {
    case http(HTTPUpstream)
    case stdio(StdioSessionManager)
}

struct CompiledRoute: Sendable {
    let router: RouterConfiguration
    let upstream: RouteUpstream
    let maxRequestBodyBytes: Int
    /// The router's MCP endpoint URL: the audience its tokens must carry.
    let resourceURL: String
    /// The allow-lists in force for this router (global narrowed by the router's), compiled once
    /// per configuration generation, so a reload applies at the next request.
    let accessPolicy: AccessPolicy
    /// Client headers never forwarded upstream: identity header names, and on protected routes the
    /// client's credentials.
    let upstreamRemovals: Set<String>
}

/// An immutable, compiled configuration. Requests read one snapshot at their start and keep it,
/// so a reload never changes the rules under a request that is already running.
final class RuntimeConfiguration: Sendable {
    let configuration: GatewayConfiguration
    let generation: Int
    private let tables: [String: RouteTable<CompiledRoute>]

    init(configuration: GatewayConfiguration, generation: Int, clients: UpstreamClients, stdio: StdioRegistry) {
        self.configuration = configuration
        self.generation = generation
        var tables: [String: RouteTable<CompiledRoute>] = [:]
        for entryPoint in configuration.entryPoints {
            var entries: [RouteTable<CompiledRoute>.Entry] = []
            for router in configuration.routers where router.entryPoints.isEmpty || router.entryPoints.contains(entryPoint.name) {
                guard let service = configuration.services[router.service] else { continue }
                let upstream: RouteUpstream
                switch service {
                case .http(let http): upstream = .http(HTTPUpstream(service: http, clients: clients))
                case .stdio(let service): upstream = .stdio(stdio.manager(for: service))
                }
                var removals = Set(router.identityHeaders.all.map { $0.lowercased() })
                if router.auth == .oauth { removals.formUnion(["authorization", "cookie"]) }
                let route = CompiledRoute(
                    router: router, upstream: upstream, maxRequestBodyBytes: service.maxRequestBodyBytes,
                    resourceURL: router.resourceURL(publicURL: configuration.publicURL),
                    accessPolicy: AccessPolicy(configuration: configuration, router: router),
                    upstreamRemovals: removals
                )
                entries.append(.init(name: router.name, rule: router.rule, priority: router.priority, target: route))
            }
            tables[entryPoint.name] = RouteTable(entries)
        }
        self.tables = tables
    }

    func routeTable(entryPoint: String) -> RouteTable<CompiledRoute>? {
        tables[entryPoint]
    }
}

/// Holds the configuration in force; swapped atomically by the reload service.
final class ConfigurationHolder: Sendable {
    private struct State {
        var current: RuntimeConfiguration
        var rejectedReloads: Int
    }

    private let state: Mutex<State>

    init(_ initial: RuntimeConfiguration) {
        self.state = Mutex(State(current: initial, rejectedReloads: 0))
    }

    var current: RuntimeConfiguration { state.withLock { $0.current } }
    var rejectedReloads: Int { state.withLock { $0.rejectedReloads } }

    func replace(with configuration: RuntimeConfiguration) {
        state.withLock { $0.current = configuration }
    }

    func recordRejectedReload() {
        state.withLock { $0.rejectedReloads += 1 }
    }
}
