import MCPTransport
import AuthorizationEndpoints
import GatewayAuth
import UnixSignals
import Foundation
public import GatewayConfig
import GatewayUpstream
import Hummingbird
public import Logging
import AsyncHTTPClient
import AuthorizationServer
import NIOPosix
import GatewayRedis
import GatewayStdio
import GatewayMetrics
import GatewayAdmin
import GatewayTracing
package import GatewayAudit
package import GatewayStore
import ServiceLifecycle
import HummingbirdHTTP2
import HummingbirdCore
import HummingbirdTLS
import HTTPTypes
import NIOCore
import NIOSSL
import GatewayCluster
import GatewayConnections

/// Composition root: one Hummingbird server per entry point, the config reload service, and the
/// shared upstream clients, run as one service group with graceful shutdown on SIGTERM/SIGINT.
public struct Gateway {
    public struct Options: Sendable {
        public var configPath: String
        public var pollInterval: Duration

        public init(configPath: String, pollInterval: Duration = .seconds(1)) {
            self.configPath = configPath
            self.pollInterval = pollInterval
        }
    }

    let options: Options
    let configuration: GatewayConfiguration
    let logger: Logger

    public init(options: Options, configuration: GatewayConfiguration, logger: Logger) {
        self.options = options
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        // A write to a peer that went away must fail the write, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        // Every connection, open stream and stdio child holds descriptors: use all the process may
        // have (the hard limit), and say so, since it bounds how many clients one instance holds.
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            let soft = limit.rlim_cur
            if soft < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max
                if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
                    logger.info("file descriptor limit raised", metadata: ["from": "\(soft)", "to": "\(limit.rlim_max)"])
                } else {
                    logger.warning("the file descriptor limit could not be raised", metadata: ["limit": "\(soft)", "hard": "\(limit.rlim_max)"])
                }
            } else {
                logger.info("file descriptor limit", metadata: ["limit": "\(soft)"])
            }
        }
        let descriptors = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 1024
        let gate = ConnectionGate(limit: configuration.limits.connections ?? ConnectionGate.defaultLimit(descriptorLimit: descriptors), logger: logger)
        if gate.limit > descriptors {
            logger.warning("limits.connections is more than the descriptors this process may open: a flood of connections can exhaust them", metadata: [
                "connections": "\(gate.limit)", "descriptors": "\(descriptors)",
            ])
        } else {
            logger.info("connection limit", metadata: ["connections": "\(gate.limit)", "source": "\(configuration.limits.connections == nil ? "half the descriptor limit" : "limits.connections")"])
        }

        var store: any KeyValueStore
        var redis: RedisStore?
        if let storeConfiguration = configuration.store {
            guard let redisStore = RedisStore(url: storeConfiguration.redisURL, keyPrefix: storeConfiguration.keyPrefix) else {
                throw GatewayStartupError("store.redis.url \(storeConfiguration.redisURL) cannot be used")
            }
            store = redisStore
            redis = redisStore
        } else {
            store = MemoryStore()
            logger.warning("no store configured: registered clients and tokens live in memory and are lost on restart")
        }
        var tracingService: (any Service)?
        if let tracing = configuration.tracing {
            tracingService = try GatewayTracing.bootstrap(tracing, logger: logger)
            store = TracedStore(store)
            logger.info("tracing", metadata: ["endpoint": "\(tracing.endpoint)", "serviceName": "\(tracing.serviceName)", "sampleRatio": "\(tracing.sampleRatio)"])
        }
        // Certificates first: a pair that cannot be used stops the start before anything is running.
        var certificates: [String: CertificateReloader] = [:]
        for entryPoint in configuration.entryPoints {
            if let tls = entryPoint.tls { certificates[entryPoint.name] = try CertificateReloader(entryPoint: entryPoint.name, settings: tls, logger: logger) }
        }
        let components = try GatewayComponents(configuration: configuration, store: store, logger: logger)
        let auditLog = components.audit?.sink as? AuditLog
        if let auditLog {
            auditLog.reopenOnSIGUSR1()
            logger.info("audit log", metadata: ["file": "\(configuration.audit?.file ?? "")", "arguments": "\(configuration.audit?.arguments.rawValue ?? "")"])
        }
        let (clients, stdioRegistry, holder, drain, authHTTP) = (components.clients, components.stdioRegistry, components.holder, components.drain, components.authHTTP)
        let membership = components.hops.membership
        // Warm children for 2026-07-28 clients, so the first requests spawn nothing.
        for case .stdio(let service) in configuration.services.values where service.pool.min > 0 {
            stdioRegistry.manager(for: service).keepWarm()
        }
        _ = LocalAccounts.decoyHash  // computed at start-up, not on the first failed sign-in
        var services: [any Service] = [
            UpstreamClientsService(clients: clients), StoreShutdownService(redis: redis), HTTPClientShutdownService(client: authHTTP),
            HTTPClientShutdownService(client: components.hops.http), ClusterHeartbeatService(membership: membership),
        ]
        // First in the list: services stop in reverse order, so this one stops after the servers.
        if let auditLog { services.insert(AuditFlushService(log: auditLog), at: 0) }
        // Started before the servers, so it stops after them and flushes the last spans.
        if let tracingService { services.append(tracingService) }
        let relayPools = UpstreamRelayPools()
        for entryPoint in configuration.entryPoints {
            var entryLogger = logger
            entryLogger[metadataKey: "entryPoint"] = "\(entryPoint.name)"
            let pipeline = components.pipeline(for: entryPoint, readinessStore: redis)
            // Plain HTTP upstreams' requests that every stage admits at once skip the task machinery.
            var fastRelay: (@Sendable () -> FastRelay)?
            if pipeline.relaysFast, entryPoint.fastRelay {
                let shared = FastRelay.Shared(pipeline: pipeline, pools: relayPools, logger: entryLogger)
                fastRelay = { @Sendable in FastRelay(shared: shared) }
            }
            let server = try Self.server(for: entryPoint, tls: certificates[entryPoint.name]?.configuration(), gate: gate, fastRelay: fastRelay) { [fastRelay] head, channel, logger in
                await pipeline.webSocketUpgrade(head, channel: channel, logger: logger, streamRelay: fastRelay)
            }
            let onServerRunning: @Sendable (any Channel) async -> Void = { [entryLogger] channel in
                entryLogger.info("listening", metadata: [
                    "address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "scheme": "\(entryPoint.tls == nil ? "http" : "https")",
                    "http2": "\(entryPoint.http2)",
                ])
            }
            let address = ApplicationConfiguration(address: .hostname(entryPoint.host, port: entryPoint.port), serverName: nil)
            if let redirectTo = entryPoint.redirectTo, let target = configuration.entryPoints.first(where: { $0.name == redirectTo }) {
                services.append(Application(
                    responder: HTTPSRedirect(target: target, holder: holder), server: server, configuration: address,
                    onServerRunning: onServerRunning, logger: entryLogger
                ))
            } else {
                services.append(Application(
                    responder: ConnectionResponder(pipeline), server: server, configuration: address,
                    onServerRunning: onServerRunning, logger: entryLogger
                ))
            }
        }
        if !certificates.isEmpty {
            services.append(CertificateWatchService(reloaders: Array(certificates.values), interval: options.pollInterval))
        }
        services.append(ReloadService(
            path: options.configPath, loader: ConfigurationLoader(), holder: holder, clients: clients, stdio: stdioRegistry, store: store,
            pollInterval: options.pollInterval, logger: logger
        ))
        // Shut down first (services stop in reverse order): ending the children ends their open
        // streams, which lets the HTTP servers finish gracefully.
        services.append(StdioShutdownService(registry: stdioRegistry, bindings: components.stdio.bindings, membership: membership, grace: configuration.shutdownGrace, logger: logger))
        services.append(ShutdownDrainService(drain: drain, membership: membership))
        logger.info("mcp-gateway starting", metadata: [
            "config": "\(options.configPath)", "publicURL": "\(configuration.publicURL)",
            "routers": "\(configuration.routers.map(\.name).joined(separator: ","))",
            "instance": "\(membership.instanceID)", "cluster": "\(configuration.cluster?.advertiseURL ?? "off")",
        ])
        Self.logFirstRunHints(configuration, logger: logger)
        var groupConfiguration = ServiceGroupConfiguration(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        // Long-lived streams must not hold shutdown hostage: requests in flight get `shutdownGrace`,
        // the servers a few seconds more to close their connections.
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownGrace + .seconds(5)
        let group = ServiceGroup(configuration: groupConfiguration)
        try await group.run()
    }
}

extension Gateway {
    /// HTTP/1.1 with WebSocket upgrades (`webSocket` decides each); over TLS when the entry point
    /// has a certificate, with HTTP/2 by ALPN when asked (no WebSocket then: RFC 8441 is not served).
    static func server(
        for entryPoint: EntryPoint, tls: TLSConfiguration?, gate: ConnectionGate, fastRelay: (@Sendable () -> FastRelay)? = nil,
        webSocket: @escaping @Sendable (HTTPRequest, any Channel, Logger) async -> WebSocketAcceptance?
    ) throws -> HTTPServerBuilder {
        let idleTimeout = Duration.nanoseconds(Int64(entryPoint.idleTimeout.timeInterval * 1e9))
        let headerTimeout = TimeAmount.nanoseconds(Int64(entryPoint.headerTimeout.timeInterval * 1e9))
        let idleAmount = TimeAmount.nanoseconds(Int64(entryPoint.idleTimeout.timeInterval * 1e9))
        let http1 = HTTP1Channel.Configuration(
            // The codec first: it takes the place of the library's, added just before it.
            additionalChannelHandlers: [HTTP1ServerCodec(), InboundCloseWatcher(), HeaderDeadline(timeout: headerTimeout)] + (fastRelay.map { [FastRelayInstaller($0)] } ?? []),
            idleTimeout: idleAmount
        )
        @Sendable func upgrading(_ responder: @escaping HTTPChannelHandler.Responder) -> GuardedUpgradeChannel {
            GuardedUpgradeChannel(
                base: HTTP1UpgradeChannel(
                    responder: responder, http1: http1, idleTimeout: idleTimeout, maxFrameSize: WebSocketClients.maxFrameSize, defersHTTP: fastRelay != nil,
                    shouldUpgrade: webSocket
                ),
                headerTimeout: headerTimeout, maxHeadBytes: 64 * 1024
            )
        }
        // Every connection passes the gate first (limits.connections), whatever it speaks.
        guard let tls else {
            return HTTPServerBuilder { responder in GatedChildChannel(base: upgrading(responder), gate: gate) }
        }
        guard entryPoint.http2 else {
            return HTTPServerBuilder { responder in GatedChildChannel(base: try TLSChannel(upgrading(responder), tlsConfiguration: tls), gate: gate) }
        }
        // The handlers are shared by HTTP/1.1 connections and HTTP/2 streams; the header deadline
        // reads HTTP/1 bytes, so an h2 entry point relies on the connection's idle timeout.
        let http2 = HTTP2UpgradeChannel.Configuration(
            idleTimeout: idleTimeout, streamConfiguration: .init(additionalChannelHandlers: [HTTP2HeaderHygiene(), InboundCloseWatcher()], idleTimeout: idleAmount)
        )
        return HTTPServerBuilder { responder in
            GatedChildChannel(base: try HTTP2UpgradeChannel(tlsConfiguration: tls, configuration: http2, responder: responder), gate: gate)
        }
    }
}

extension Gateway {
    /// The hash of `demo-password-change-me`, as the shipped gateway.yaml has it.
    static let shippedDemoHash = "$scrypt$ln=15,r=8,p=1$T32fP4Fuhz-TIWyyoElvtQ$XvQbAMVbjfpiclAPglkekM1I-P8og-oLgRjMnVmVMSU"

    /// What a first-time operator needs from the log: each router's public MCP URL and whether it
    /// needs sign-in, and while the shipped demo account exists, how to use it and that it must go.
    static func logFirstRunHints(_ configuration: GatewayConfiguration, logger: Logger) {
        for router in configuration.routers {
            logger.info("MCP endpoint", metadata: [
                "router": "\(router.name)", "url": "\(router.resourceURL(publicURL: configuration.publicURL))",
                "signIn": "\(router.acceptsOAuth ? "required" : router.auth == .oauth ? "API key" : "none (public)")",
            ])
        }
        guard let demo = configuration.auth?.localUsers["demo"] else { return }
        if demo == shippedDemoHash {
            logger.warning("the local account demo with the shipped password exists: sign in on the consent page as demo / demo-password-change-me. Replace it (mcp-gateway hash-password) before the gateway is reachable from anywhere but this machine")
        } else {
            logger.notice("a local account named demo exists: make sure it is meant to")
        }
    }
}

/// At SIGTERM: lets the requests the children are answering finish (up to `shutdownGrace`),
/// then releases this instance's sessions in the store (another instance takes each over at its
/// next request, without waiting for this one's heartbeat to lapse), ends the children, and
/// leaves the cluster.
struct StdioShutdownService: Service {
    let registry: StdioRegistry
    let bindings: SessionBindings
    let membership: ClusterMembership
    let grace: Duration
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        let deadline = ContinuousClock.now + grace
        // While draining, answers close their connections: a second lets the proxies in front
        // cycle their kept-alive connections before the listener goes.
        try? await Task.sleep(for: min(grace, .seconds(1)))
        var pending = registry.allManagers.reduce(0) { $0 + $1.pendingRequests }
        if pending > 0 { logger.info("waiting for requests in flight", metadata: ["requests": "\(pending)", "grace": "\(grace)"]) }
        // Polled: a request ending is not an event anyone waits on elsewhere, and this runs once.
        while pending > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
            pending = registry.allManagers.reduce(0) { $0 + $1.pendingRequests }
        }
        if pending > 0 { logger.warning("shutdownGrace elapsed with requests in flight; they end now", metadata: ["requests": "\(pending)"]) }
        let sessions = registry.allManagers.flatMap(\.sessionIDs)
        for sessionID in sessions {
            _ = try? await bindings.move(sessionID, from: [membership.instanceID], to: nil)
        }
        let count = registry.allManagers.reduce(0) { $0 + $1.childPIDs.count }
        logger.info("ending stdio children", metadata: ["children": "\(count)", "sessionsReleased": "\(sessions.count)"])
        await registry.shutdown()
        await membership.leave()
    }
}

/// This instance's heartbeat in the store, until the graceful shutdown.
struct ClusterHeartbeatService: Service {
    let membership: ClusterMembership

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await membership.run()
        }
    }
}

public struct GatewayStartupError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Writes the audit lines still gathering once everything that records them has stopped.
struct AuditFlushService: Service {
    let log: AuditLog

    func run() async throws {
        try? await gracefulShutdown()
        log.flush()
    }
}

/// Closes the Redis connections last.
struct StoreShutdownService: Service {
    let redis: RedisStore?

    func run() async throws {
        try? await gracefulShutdown()
        await redis?.shutdown()
    }
}

/// Shuts the authorization server's HTTP client (GitHub) down after the servers have stopped.
struct HTTPClientShutdownService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try? await client.shutdown()
    }
}

/// Shuts the shared HTTP clients down after the servers have stopped.
struct UpstreamClientsService: Service {
    let clients: UpstreamClients

    func run() async throws {
        try? await gracefulShutdown()
        await clients.shutdown()
    }
}

/// Everything that answers requests, built from a configuration and a store: what `run` serves,
/// and what in-process tests drive (with a `MemoryStore`).
package struct GatewayComponents: Sendable {
    let clients: UpstreamClients
    let stdioRegistry: StdioRegistry
    let holder: ConfigurationHolder
    let drain: ShutdownDrain
    let proxy: HTTPProxy
    let stdio: StdioBridge
    let registration: RegistrationEndpoints
    let oauth: OAuthEndpoints
    let gate: ResourceGate
    let modernHTTP: ModernHTTPTranslator
    let authHTTP: HTTPClient
    /// Access tokens of the issuers in `auth.jwt.issuers` (which reload live).
    let externalTokens: ExternalTokens
    /// Sessions of 2024-11-05 HTTP+SSE clients, whichever entry point they came through.
    let legacySSE: LegacySSEClients
    /// WebSocket sessions, whichever entry point they came through.
    let webSocketSessions: WebSocketClients.SessionCount
    /// Where the access log goes (`log.accessLog`); nil when it is off.
    let accessLog: Logger?
    /// The audit log (`audit:`) and its settings; nil when there is none.
    let audit: (sink: any AuditSink, configuration: AuditConfiguration)?
    /// The Prometheus series (`metrics:`); nil when metrics are off.
    let metrics: GatewayMetrics?
    /// Clients, sessions and users, for the `/admin` page.
    let administration: Administration
    /// The state store (admin page sessions).
    let store: any KeyValueStore
    /// `tracing:` is set (the tracer is installed by `run`).
    let tracing: Bool
    /// Session streams owed a `list_changed` when a reload changes a caller's policies.
    let listChanges: ListChangeNotifier
    /// Groups of services served as one MCP server.
    let groups: GroupServer
    /// The other instances on the store, and the requests forwarded to them.
    let hops: ClusterHops
    /// Users' own connections to OAuth-protected upstreams.
    let connections: UpstreamConnections

    /// The sign-in methods the consent page offers: GitHub when configured with a client id, local
    /// accounts when any are listed.
    static func identityProviders(
        github: GitHubClient?, auth: AuthConfiguration, store: any KeyValueStore, logger: Logger, connections: UpstreamConnections? = nil
    ) -> [any IdentityProvider] {
        var providers: [any IdentityProvider] = []
        if let github {
            var signIn = GitHubSignIn(github: github, logger: logger)
            if let connections {
                // Services calling GitHub with the user's token (`oauth.provider: github`): their
                // scopes are asked for at sign-in, and the token is kept for them.
                signIn.extraScopes = { connections.githubServices().flatMap(\.scopes) }
                signIn.keepToken = { user, token in await connections.keepGitHubToken(token, for: user) }
            }
            providers.append(signIn)
        }
        if !auth.localUsers.isEmpty { providers.append(LocalAccounts(users: auth.localUsers, limits: auth.localLimits, store: store, logger: logger)) }
        return providers
    }

    package init(configuration: GatewayConfiguration, store: any KeyValueStore, logger: Logger, auditSink: (any AuditSink)? = nil) throws {
        let auditSink = auditSink ?? configuration.audit.map { AuditLog(path: $0.file, logger: logger) }
        let clients = UpstreamClients()
        let metrics = configuration.metrics.map { _ in GatewayMetrics() }
        let stdioRegistry = StdioRegistry(logger: logger, metrics: metrics)
        let holder = ConfigurationHolder(RuntimeConfiguration(configuration: configuration, generation: 1, clients: clients, stdio: stdioRegistry, store: store))
        let instances = ClusterMembership(
            store: store, advertiseURL: configuration.cluster?.advertiseURL, heartbeatTimeout: configuration.cluster?.heartbeatTimeout ?? .seconds(10), logger: logger
        )
        let bindings = SessionBindings(store: store, instanceID: instances.instanceID)
        // A session that ended on its own is gone everywhere: no other instance resurrects it.
        stdioRegistry.onSessionEnded { sessionID in await bindings.unbind(sessionID) }
        let drain = ShutdownDrain()
        self.hops = ClusterHops(
            membership: instances, signature: configuration.cluster.map { HopSignature(secret: $0.secret) },
            http: HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: Self.hopClientConfiguration),
            drain: drain
        )

        let stdio = StdioBridge(registry: stdioRegistry, bindings: bindings, cluster: instances, forwards: configuration.cluster != nil)
        let auth = configuration.auth ?? AuthConfiguration()
        let registry = ClientRegistry(store: store, settings: .init(
            rateLimitPerMinute: auth.registration.rateLimit, unusedClientTTL: auth.registration.unusedClientTTL,
            globalRateLimitPerMinute: auth.registration.globalRateLimit
        ))
        let refreshTokens = RefreshTokens(store: store, lifetime: auth.refreshTokenTTL, reuseGrace: auth.refreshReuseGrace)
        let keys = KeyManager(store: store, settings: .init(
            algorithm: auth.signing.algorithm == .rs256 ? .rs256 : .es256,
            rotationInterval: auth.signing.rotationInterval.timeInterval,
            maxTokenLifetime: auth.longestAccessTokenTTL.timeInterval + AccessTokens.clockSkew
        ))
        let accessTokens = AccessTokens(issuer: configuration.publicURL.origin, lifetime: auth.accessTokenTTL, longestLifetime: auth.longestAccessTokenTTL, keys: keys, store: store)
        // Identity tokens for upstreams that ask for them, signed with the same keys (the JWKS).
        let proxy = HTTPProxy(bindings: bindings, drain: drain, identityTokens: IdentityTokens(issuer: configuration.publicURL.origin, keys: keys))
        var registration = RegistrationEndpoints(
            registry: registry, refreshTokens: refreshTokens, accessTokens: accessTokens, publicURL: configuration.publicURL
        )
        let documents: ClientMetadataDocuments?
        do {
            documents = auth.clientMetadata.enabled ? try ClientMetadataDocuments(configuration: auth.clientMetadata, logger: logger) : nil
        } catch {
            throw GatewayStartupError("auth.clientMetadata cannot be used: \(error)")
        }
        let authHTTP = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: .init(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10)), decompression: .disabled
        ))
        var github: GitHubClient?
        if let githubConfiguration = auth.github, !githubConfiguration.clientID.isEmpty {
            github = GitHubClient(configuration: githubConfiguration, http: authHTTP)
        }
        if auth.github != nil, github == nil {
            logger.warning("auth.github.clientID is empty: GitHub sign-in is off (set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET)")
        }
        let connections = UpstreamConnections(
            vault: ConnectionVault(store: store, keys: { holder.current.configuration.storeKeys }),
            client: UpstreamOAuthClient(http: authHTTP, store: store, logger: logger, keys: { holder.current.configuration.storeKeys }),
            holder: holder, logger: logger, audit: auditSink
        )
        var builtInClients: [String: ClientMetadata] = [
            OAuthEndpoints.connectionsClientID: .builtIn(name: "mcp-gateway connections", redirectURI: configuration.publicURL.origin + "/connections/callback"),
        ]
        if configuration.admin != nil {
            builtInClients[OAuthEndpoints.adminClientID] = .builtIn(name: "mcp-gateway admin page", redirectURI: configuration.publicURL.origin + "/admin/callback")
        }
        var oauth = OAuthEndpoints(
            currentConfiguration: { holder.current.configuration }, publicURL: configuration.publicURL, registry: registry,
            clients: ClientDirectory(registry: registry, documents: documents, builtIn: builtInClients), codes: AuthorizationCodes(store: store, familyLifetime: auth.refreshTokenTTL),
            refreshTokens: refreshTokens, accessTokens: accessTokens, keys: keys, flows: AuthorizationFlows(store: store),
            identityProviders: Self.identityProviders(github: github, auth: auth, store: store, logger: logger, connections: connections),
            metadataDocumentsEnabled: documents != nil, store: store, logger: logger
        )
        self.connections = connections
        var membership: MembershipChecker?
        if let github, let githubConfiguration = auth.github, !githubConfiguration.membershipToken.isEmpty {
            membership = MembershipChecker(github: github, token: githubConfiguration.membershipToken, ttl: githubConfiguration.membershipTTL, store: store, logger: logger)
        }
        self.clients = clients
        self.stdioRegistry = stdioRegistry
        self.holder = holder
        self.drain = drain
        self.proxy = proxy
        self.stdio = stdio
        registration.audit = auditSink
        oauth.audit = auditSink
        oauth.metrics = metrics
        let users = UserDirectory(store: store, lifetime: auth.refreshTokenTTL)
        oauth.users = users
        oauth.documents = documents
        self.store = store
        self.tracing = configuration.tracing != nil
        self.administration = Administration(registry: registry, refreshTokens: refreshTokens, accessTokens: accessTokens, users: users, sessions: bindings)
        self.metrics = metrics
        self.registration = registration
        self.oauth = oauth
        self.gate = ResourceGate(
            accessTokens: accessTokens, publicURL: configuration.publicURL, store: store, membership: membership,
            isConfiguredMachineClient: { id in holder.current.configuration.auth?.machineClients.contains { $0.id == id } ?? false }
        )
        self.modernHTTP = ModernHTTPTranslator(bindings: bindings, identityTokens: proxy.identityTokens, locator: stdio.locator)
        self.accessLog = configuration.log.accessLog ? Logger(label: "mcp-gateway.access") : nil
        self.legacySSE = LegacySSEClients(maximumSessions: configuration.limits.legacySSESessions)
        self.webSocketSessions = WebSocketClients.SessionCount(limit: configuration.limits.webSocketSessions)
        self.audit = auditSink.flatMap { sink in configuration.audit.map { (sink, $0) } }
        self.authHTTP = authHTTP
        self.externalTokens = ExternalTokens(http: authHTTP, logger: logger)
        let listChanges = ListChangeNotifier(logger: logger)
        holder.observeReplacements { old, new in listChanges.configurationReplaced(old: old, new: new) }
        self.listChanges = listChanges
        self.groups = GroupServer(bindings: bindings, locator: stdio.locator, logger: logger)
    }

    /// The client of requests forwarded between instances: a refused connection fails at once (the
    /// instance is gone: its sessions are taken over without waiting out a connect timeout), and
    /// every open event stream relayed holds a connection of its own, so the pool is not capped at
    /// AsyncHTTPClient's default of 8 per instance.
    static var hopClientConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(1)), decompression: .disabled)
        configuration.traceOnlyWithInstalledTracer()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 65_536
        return configuration
    }

    /// Releases the clients (what the lifecycle services do at shutdown).
    package func shutdown() async {
        await stdioRegistry.shutdown()
        await clients.shutdown()
        try? await authHTTP.shutdown()
        try? await hops.http.shutdown()
    }
}

/// Starts the drain when the service group begins its graceful shutdown (placed so that it is
/// told before the HTTP servers, which wait for open requests).
struct ShutdownDrainService: Service {
    let drain: ShutdownDrain
    let membership: ClusterMembership

    func run() async throws {
        try? await gracefulShutdown()
        drain.drain()
        // From now on the other instances take this one's sessions over instead of forwarding.
        await membership.markDraining()
    }
}
