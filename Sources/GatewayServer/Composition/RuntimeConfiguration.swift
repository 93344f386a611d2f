import MCPTransport
import GatewayAuth
import AuthorizationServer
import GatewayConfig
import GatewayRouting
import GatewayStdio
import GatewayUpstream
import Synchronization
import GatewayMiddlewares
import GatewayStore
import GatewayPolicies
import GatewayAudit

/// What a router leads to once compiled.
enum RouteUpstream: Sendable {
    case http(HTTPUpstream)
    case stdio(StdioSessionManager)
    /// A virtual server over other services (`services.<s>.group`).
    case group(GroupRoute)
}

/// A class: the request context carries it through every stage, and a reference is one retain
/// where a copy of the router's configuration would be dozens.
final class CompiledRoute: TransportRoute {
    let router: RouterConfiguration
    let upstream: RouteUpstream
    let maxRequestBodyBytes: Int
    /// The router's MCP endpoint URL: the audience its tokens must carry.
    let resourceURL: String
    /// The allow-lists in force for this router (global narrowed by the router's), compiled once
    /// per configuration generation, so a reload applies at the next request.
    let accessPolicy: AccessPolicy
    /// The router's `middlewares`, in its order, built for this configuration generation.
    let middlewares: [any RouteMiddleware]
    /// Whether every one of them decides without a task (`RouteMiddleware.decidesWithoutTask`).
    let middlewaresDecideWithoutTask: Bool
    /// The router's `tools` / `resources` / `prompts` / `policies`, compiled.
    let callPolicy: CompiledCallPolicy
    /// Whether the fast relay may carry this route's requests: a plain HTTP upstream it can
    /// reach (neither the user's own upstream token nor a signed identity) or a stdio service,
    /// no policies, and an MCP path the front door never answers. (Middlewares it runs itself.)
    let relaysFast: Bool
    /// The audit line's `router`, `service` and `transport`, encoded once (every request's line
    /// has them).
    let auditFields: [UInt8]
    /// This route among every route the process made (`InstanceSerial`): what a connection's
    /// memo remembers it by, instead of a weak reference.
    let serial = InstanceSerial.next()

    init(
        router: RouterConfiguration, upstream: RouteUpstream, maxRequestBodyBytes: Int, resourceURL: String, accessPolicy: AccessPolicy,
        middlewares: [any RouteMiddleware] = [], callPolicy: CompiledCallPolicy? = nil
    ) {
        self.middlewares = middlewares
        self.middlewaresDecideWithoutTask = middlewares.allSatisfy(\.decidesWithoutTask)
        self.callPolicy = callPolicy ?? CompiledCallPolicy(router.callPolicy)
        self.router = router
        self.upstream = upstream
        self.maxRequestBodyBytes = maxRequestBodyBytes
        self.resourceURL = resourceURL
        self.accessPolicy = accessPolicy
        switch upstream {
        case .http(let http):
            self.relaysFast = http.service.oauth == nil && http.service.identityToken == nil && http.relayTarget != nil
                && self.callPolicy.isEmpty && !FrontDoor.mayAnswer(path: router.mcpPath)
        case .stdio:
            self.relaysFast = self.callPolicy.isEmpty && !FrontDoor.mayAnswer(path: router.mcpPath)
        case .group:
            self.relaysFast = false
        }
        let transport: String = switch upstream {
        case .http: "http"
        case .stdio: "stdio"
        // An OAuth-protected HTTP service is served through a one-member passthrough group.
        case .group(let group): group.passthrough ? "http" : "group"
        }
        self.auditFields = AuditLine.fields([("router", router.name), ("service", router.service), ("transport", transport)])
    }
}

/// An immutable, compiled configuration. Requests read one snapshot at their start and keep it,
/// so a reload never changes the rules under a request that is already running.
final class RuntimeConfiguration: Sendable {
    let configuration: GatewayConfiguration
    let generation: Int
    /// This configuration among every one the process made (`InstanceSerial`).
    let serial = InstanceSerial.next()
    private let tables: [String: RouteTable<CompiledRoute>]
    private let hosts: [String: HostAllowList]
    /// Each router's call policy, compiled once for all its entry points.
    let callPolicies: [String: CompiledCallPolicy]

    init(configuration: GatewayConfiguration, generation: Int, clients: UpstreamClients, stdio: StdioRegistry, store: any KeyValueStore) {
        self.configuration = configuration
        self.generation = generation
        var tables: [String: RouteTable<CompiledRoute>] = [:]
        var hosts: [String: HostAllowList] = [:]
        let callPolicies = Dictionary(configuration.routers.map { ($0.name, CompiledCallPolicy($0.callPolicy)) }, uniquingKeysWith: { first, _ in first })
        self.callPolicies = callPolicies
        let identityHeaderNames = Set(configuration.routers.flatMap { $0.identityHeaders.all.map(HeaderPolicy.folded) }
            + IdentityHeaderNames.default.all.map(HeaderPolicy.folded))
        for entryPoint in configuration.entryPoints {
            var entries: [RouteTable<CompiledRoute>.Entry] = []
            for router in configuration.routers where router.entryPoints.isEmpty || router.entryPoints.contains(entryPoint.name) {
                guard let service = configuration.services[router.service] else { continue }
                // Every router's identity header names, on every route: a header one router sets
                // must not be forgeable through another.
                // Client headers never forwarded upstream (folded names, see `HeaderPolicy.folded`):
                // every router's identity header names, and the client's `Authorization` (unless an
                // `auth: none` HTTP service asks for it with `passAuthorization`); on protected
                // routes all cookies.
                func removals(for service: ServiceConfiguration) -> Set<String> {
                    var removals = identityHeaderNames
                    if router.auth == .oauth {
                        removals.formUnion(["authorization", "cookie"])
                        // A key is the gateway's credential, never the upstream's.
                        if router.authMethods.contains(.apiKey) { removals.insert("x-api-key") }
                    } else if case .http(let http) = service, !http.passAuthorization {
                        removals.insert("authorization")
                    }
                    return removals
                }
                func httpUpstream(_ http: HTTPServiceConfiguration) -> HTTPUpstream {
                    let rules = UpstreamHeaderRules(removing: removals(for: .http(http)), identityNames: router.identityHeaders, service: http)
                    return HTTPUpstream(service: http, clients: clients, headerRules: rules)
                }
                let upstream: RouteUpstream
                switch service {
                case .http(let http) where http.oauth != nil:
                    var memberRouter = router
                    memberRouter.name = "\(router.name)/\(router.service)"
                    memberRouter.callPolicy = CallPolicy()
                    let member = GroupRoute.Member(name: router.service, route: CompiledRoute(
                        router: memberRouter, upstream: .http(httpUpstream(http)), maxRequestBodyBytes: service.maxRequestBodyBytes,
                        resourceURL: router.resourceURL(publicURL: configuration.publicURL),
                        accessPolicy: AccessPolicy(configuration: configuration, router: router)
                    ))
                    var group = GroupServiceConfiguration(name: router.service, members: [router.service])
                    group.prefix = .never
                    group.maxRequestBodyBytes = http.maxRequestBodyBytes
                    upstream = .group(GroupRoute(configuration: group, members: [member], tags: [:], passthrough: true))
                case .http(let http): upstream = .http(httpUpstream(http))
                case .stdio(let service): upstream = .stdio(stdio.manager(for: service))
                case .group(let group):
                    var members: [GroupRoute.Member] = []
                    var tags: [String: [String]] = [:]
                    for name in group.members {
                        guard let memberService = configuration.services[name] else { continue }
                        let memberUpstream: RouteUpstream
                        switch memberService {
                        case .http(let http):
                            memberUpstream = .http(httpUpstream(http))
                            tags[name] = http.tags
                        case .stdio(let stdioService):
                            memberUpstream = .stdio(stdio.manager(for: stdioService))
                            tags[name] = stdioService.tags
                        case .group: continue
                        }
                        var memberRouter = router
                        memberRouter.name = "\(router.name)/\(name)"
                        memberRouter.service = name
                        // The group's policies apply to the names it exposes, at the group.
                        memberRouter.callPolicy = CallPolicy()
                        members.append(GroupRoute.Member(name: name, route: CompiledRoute(
                            router: memberRouter, upstream: memberUpstream, maxRequestBodyBytes: memberService.maxRequestBodyBytes,
                            resourceURL: router.resourceURL(publicURL: configuration.publicURL),
                            accessPolicy: AccessPolicy(configuration: configuration, router: router)
                        )))
                    }
                    upstream = .group(GroupRoute(configuration: group, members: members, tags: tags))
                }
                let route = CompiledRoute(
                    router: router, upstream: upstream, maxRequestBodyBytes: service.maxRequestBodyBytes,
                    resourceURL: router.resourceURL(publicURL: configuration.publicURL),
                    accessPolicy: AccessPolicy(configuration: configuration, router: router),
                    middlewares: router.middlewares.compactMap { name in
                        configuration.middlewares[name].map { Self.middleware(named: name, $0, store: store) }
                    },
                    callPolicy: callPolicies[router.name]
                )
                entries.append(.init(name: router.name, rule: router.rule, priority: router.priority, target: route))
            }
            tables[entryPoint.name] = RouteTable(entries)
            hosts[entryPoint.name] = HostAllowList(configuration: configuration, entryPoint: entryPoint)
        }
        self.tables = tables
        self.hosts = hosts
    }

    /// One `middlewares:` entry as a stage (each kind its own type).
    static func middleware(named name: String, _ configuration: MiddlewareConfiguration, store: any KeyValueStore) -> any RouteMiddleware {
        switch configuration {
        case .rateLimit(let limit): RateLimiter(name: name, configuration: limit, store: store)
        }
    }

    func routeTable(entryPoint: String) -> RouteTable<CompiledRoute>? {
        tables[entryPoint]
    }

    func allowedHosts(entryPoint: String) -> HostAllowList {
        hosts[entryPoint] ?? HostAllowList(exact: [], suffixes: [])
    }
}

/// The host names an entry point serves MCP requests for: the public URL's host (with the other
/// loopback names when it is a loopback one), every router's `Host` rule, and the entry point's
/// `allowedHosts`. A DNS-rebinding page reaches the gateway under its own name, which is none of
/// these, so its requests (and any `Origin` it sends) are refused.
struct HostAllowList: Sendable {
    let exact: Set<String>
    /// From `*.example.com`: `.example.com`.
    let suffixes: [String]

    static let loopbackNames: Set<String> = ["127.0.0.1", "localhost", "[::1]", "::1"]

    init(exact: Set<String>, suffixes: [String]) {
        self.exact = exact
        self.suffixes = suffixes
    }

    init(configuration: GatewayConfiguration, entryPoint: EntryPoint) {
        var exact: Set<String> = [configuration.publicURL.host.lowercased()]
        if exact.isDisjoint(with: Self.loopbackNames) == false { exact.formUnion(Self.loopbackNames) }
        for router in configuration.routers {
            exact.formUnion(router.rule.hostNames.map { IncomingRequest.hostWithoutPort($0) })
        }
        var suffixes: [String] = []
        for name in entryPoint.allowedHosts {
            if name.hasPrefix("*.") { suffixes.append(String(name.dropFirst())) } else { exact.insert(name) }
        }
        self.init(exact: exact, suffixes: suffixes)
    }

    func admits(_ host: String) -> Bool {
        let host = host.hasSuffix(".") ? String(host.dropLast()) : host
        return exact.contains(host) || suffixes.contains { host.hasSuffix($0) && host.count > $0.count }
    }
}

/// Holds the configuration in force; swapped atomically by the reload service.
final class ConfigurationHolder: Sendable {
    private struct State {
        var current: RuntimeConfiguration
        var rejectedReloads: Int
    }

    private let state: Mutex<State>
    /// Told of every replacement (old, new), after it is in force.
    private let observers = Mutex<[@Sendable (RuntimeConfiguration, RuntimeConfiguration) -> Void]>([])

    init(_ initial: RuntimeConfiguration) {
        self.state = Mutex(State(current: initial, rejectedReloads: 0))
    }

    func observeReplacements(_ observer: @escaping @Sendable (_ old: RuntimeConfiguration, _ new: RuntimeConfiguration) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    var current: RuntimeConfiguration { state.withLock { $0.current } }
    var rejectedReloads: Int { state.withLock { $0.rejectedReloads } }

    func replace(with configuration: RuntimeConfiguration) {
        let old = state.withLock { state in
            defer { state.current = configuration }
            return state.current
        }
        for observer in observers.withLock({ $0 }) { observer(old, configuration) }
    }

    func recordRejectedReload() {
        state.withLock { $0.rejectedReloads += 1 }
    }
}

/// Numbers no two objects of a process share, for remembering an object without holding it:
/// a weak reference moves the object's reference count into a side table for the rest of its
/// life, and routes and configurations are retained on every request, by both event loops (the
/// side table's count is the slower path each time). An address could be reused once the
/// object is gone; a serial is not.
enum InstanceSerial {
    private static let counter = Atomic<Int>(0)

    static func next() -> Int {
        counter.add(1, ordering: .relaxed).newValue
    }
}
