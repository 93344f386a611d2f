// swift-tools-version:6.2
import PackageDescription

// Module boundaries follow the data path: config → routing → upstream → server composition.
// GatewayConfig and GatewayRouting stay free of NIO/Hummingbird so they build and test fast.
/// The language settings every module of the project compiles with: imports are internal unless
/// marked `public import`, existentials are spelled `any`, and members are visible only through
/// modules a file imports itself.
let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "mcp-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mcp-gateway", targets: ["mcp-gateway"])
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // Already in the graph through AsyncHTTPClient; named for TLSConfiguration (extra CAs).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // Already in the graph through Hummingbird; named for NIOHTTPTypes (the request parts a
        // connection handler sees).
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        // Already in the graph through Hummingbird; named for HTTPFields in GatewayAuth.
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // OTLP/HTTP only: the gRPC exporter's dependencies are not built.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // External issuers' JWKS and signatures (RS256, ES256, EdDSA), and client assertions.
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
    ],
    targets: [
        .target(
            name: "GatewayConfig",
            dependencies: [
                .product(name: "Yams", package: "Yams"),
                "GatewayRouting",
            ]
        ),
        .target(name: "GatewayRouting"),
        .target(name: "CProcessSpawn"),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .target(name: "GatewayStore"),
        .target(
            name: "AuthorizationServer",
            dependencies: [
                "GatewayStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "GatewayRedis",
            dependencies: [
                "CHiredis",
                "GatewayStore",
                "ThreadShards",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "GatewayStdio",
            dependencies: [
                "CProcessSpawn",
                "GatewayMetrics",
                "GatewayConfig",
                "GatewayAuth",
                "GatewayCluster",
                "MCPMessages",
                "MCPTranslation",
                "MCPTransport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // Services that speak only the 2024-11-05 HTTP+SSE transport (`sse:`).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // Users' own connections to OAuth-protected upstreams: sealed tokens in the store, the
        // gateway as an MCP OAuth client (discovery, registration, PKCE, refresh, revocation).
        .target(
            name: "GatewayConnections",
            dependencies: [
                "GatewayConfig",
                "GatewayStore",
                "GatewayAuth",
                "AuthorizationServer",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ]
        ),
        // Several instances on one store: membership by heartbeat, signed hops between instances.
        .target(
            name: "GatewayCluster",
            dependencies: [
                "GatewayStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "MCPMessages",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        // The resource side of OAuth: the bearer-token gate with its challenges, GitHub membership,
        // identity headers, client addresses behind proxies, and who owns each session.
        .target(
            name: "GatewayAuth",
            dependencies: [
                "GatewayConfig",
                "GatewayStore",
                "AuthorizationServer",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ]
        ),
        // The authorization server's HTTP side: metadata, /authorize with sign-in (GitHub, local
        // accounts) and consent, /token, /revoke, /introspect, registration, metadata documents.
        .target(
            name: "AuthorizationEndpoints",
            dependencies: [
                "GatewayAudit",
                "GatewayPages",
                "GatewayMetrics",
                "GatewayAuth",
                "GatewayConfig",
                "GatewayStore",
                "AuthorizationServer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Between the protocol eras on messages alone (no HTTP, no processes): rewrites, the
        // Multi Round-Trip relay, parked requests, request-state affinity, the notification hub.
        .target(
            name: "MCPTranslation",
            dependencies: [
                "MCPMessages",
                "AuthorizationServer",
                "GatewayStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ]
        ),
        // What every transport shares: the exchange a transport serves, the one error mapping, the
        // JSON and SSE responses, the Multi Round-Trip relay over HTTP, client-close watching.
        .target(
            name: "MCPTransport",
            dependencies: [
                "GatewayAuth",
                "GatewayCluster",
                "AuthorizationEndpoints",
                "GatewayConfig",
                "MCPMessages",
                "MCPTranslation",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ]
        ),
        // HTTP upstreams: the client, the header policy, the relay, and the translation to and
        // from a server of the other era (its era cache and the gateway's own upstream sessions).
        .target(
            name: "GatewayUpstream",
            dependencies: [
                "GatewayConfig",
                "GatewayAuth",
                "MCPMessages",
                "MCPTranslation",
                "MCPTransport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ]
        ),
        // Structured output: the audit log (events as JSON lines, argument redaction, the file
        // writer that SIGUSR1 reopens) and `log.format: json`.
        .target(
            name: "GatewayAudit",
            dependencies: ["ThreadShards", "MCPMessages", .product(name: "Logging", package: "swift-log")]
        ),
        // State kept per thread, for what every event loop updates on every request (pure).
        .target(name: "ThreadShards"),
        // What operators do to the state: clients, sessions, users (the admin CLI and page).
        .target(
            name: "GatewayAdmin",
            dependencies: ["AuthorizationServer", "GatewayAuth", "GatewayConfig", "GatewayStore"]
        ),
        // OpenTelemetry: the OTLP/HTTP backend, W3C trace context in and out of HTTP headers, and
        // the store's operations as spans.
        .target(
            name: "GatewayTracing",
            dependencies: [
                "GatewayConfig",
                "GatewayStore",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The gateway's own HTML pages as Mustache templates (escaped by default).
        .target(
            name: "GatewayPages",
            dependencies: [.product(name: "Mustache", package: "swift-mustache")]
        ),
        // Prometheus series (swift-metrics API, swift-prometheus exposition) with bounded labels.
        .target(
            name: "GatewayMetrics",
            dependencies: [
                "ThreadShards",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The routers' `middlewares:` stages (rate limits first), run on authenticated, parsed calls.
        // Virtual servers: members' lists merged and named, broadcast results (pure).
        .target(name: "MCPAggregation", dependencies: ["GatewayConfig"]),
        // Tool, resource and prompt policies: per-caller decisions and list filtering (pure).
        .target(
            name: "GatewayPolicies",
            dependencies: [
                "AuthorizationServer",
                "GatewayConfig",
                "MCPMessages",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "GatewayMiddlewares",
            dependencies: [
                "AuthorizationServer",
                "GatewayAuth",
                "GatewayConfig",
                "GatewayStore",
                "MCPMessages",
                "MCPTransport",
                "ThreadShards",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "GatewayServer",
            dependencies: [
                "CProcessSpawn",
                "GatewayConfig",
                "GatewayRouting",
                "GatewayUpstream",
                "GatewayStdio",
                "MCPTransport",
                "GatewayMiddlewares",
                "GatewayPolicies",
                "MCPAggregation",
                "GatewayAudit",
                "GatewayMetrics",
                "GatewayPages",
                "GatewayAdmin",
                "GatewayTracing",
                "GatewayCluster",
                "GatewayConnections",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                "GatewayAuth",
                "AuthorizationEndpoints",
                "MCPMessages",
                "MCPTranslation",
                "AuthorizationServer",
                "GatewayStore",
                "GatewayRedis",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                // MCP over WebSocket on the entry points: NIO's frame codec under a channel handler.
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "mcp-gateway",
            dependencies: [
                "GatewayAdmin",
                "GatewayConnections",
                "GatewayAuth",
                "GatewayRedis",
                "GatewayStore",
                "GatewayAudit",
                "GatewayConfig",
                "GatewayServer",
                "AuthorizationServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "GatewayConfigTests", dependencies: ["GatewayConfig"]),
        .testTarget(name: "GatewayRoutingTests", dependencies: ["GatewayRouting"]),
        .testTarget(name: "GatewayMetricsTests", dependencies: ["GatewayMetrics"]),
        .testTarget(name: "ThreadShardsTests", dependencies: ["ThreadShards"]),
        .testTarget(name: "GatewayPagesTests", dependencies: ["GatewayPages"]),
        .testTarget(name: "MCPAggregationTests", dependencies: ["MCPAggregation", "GatewayConfig"]),
        .testTarget(name: "GatewayPoliciesTests", dependencies: ["GatewayPolicies", "GatewayConfig", "AuthorizationServer", "MCPMessages", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "GatewayAuditTests", dependencies: ["GatewayAudit", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "GatewayMiddlewaresTests",
            dependencies: [
                "GatewayMiddlewares", "GatewayAuth", "GatewayConfig", "GatewayStore", "MCPMessages", "MCPTransport", "AuthorizationServer",
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"), .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        .testTarget(name: "MCPMessagesTests", dependencies: ["MCPMessages", .product(name: "NIOTestUtils", package: "swift-nio")]),
        .testTarget(name: "GatewayStoreTests", dependencies: ["GatewayStore", "GatewayRedis", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(name: "GatewayConnectionsTests", dependencies: ["GatewayConnections", "GatewayConfig", "GatewayStore"]),
        .testTarget(name: "GatewayClusterTests", dependencies: ["GatewayCluster", "GatewayStore", "GatewayAuth", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "AuthorizationEndpointsTests",
            dependencies: ["AuthorizationEndpoints", "AuthorizationServer", "GatewayAuth", "GatewayConfig", "GatewayStore", .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "Logging", package: "swift-log"), .product(name: "HTTPTypes", package: "swift-http-types")]
        ),
        .testTarget(name: "AuthorizationServerTests", dependencies: ["AuthorizationServer", "GatewayStore"]),
        .testTarget(name: "MCPTranslationTests", dependencies: ["MCPTranslation", "MCPMessages", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio")]),
        .testTarget(name: "GatewayStdioTests", dependencies: ["GatewayStdio", "GatewayConfig", "MCPTranslation", .product(name: "NIOTestUtils", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")]),
        // `just bench-policies`: the cost of a policy decision (not part of the product).
        .executableTarget(
            name: "PolicyBenchmark",
            dependencies: ["GatewayPolicies", "GatewayConfig", "AuthorizationServer", .product(name: "NIOCore", package: "swift-nio")],
            path: "bench/PolicyBenchmark"
        ),
        // The floor of a SwiftNIO relay, measured beside nginx and the gateway by bench/http_proxy.py
        // (not part of the product).
        .executableTarget(
            name: "NIOFloor",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "bench/NIOFloor"
        ),
        // Shared test support: the gateway in process from a gateway.yaml text, an echo upstream.
        .target(
            name: "GatewayTesting",
            dependencies: [
                "GatewayServer", "GatewayConfig", "GatewayStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ],
            path: "Tests/GatewayTesting"
        ),
        // The application in process (HummingbirdTesting's router and live clients) with MemoryStore.
        .testTarget(
            name: "GatewayServerTests",
            dependencies: [
                "GatewayServer", "GatewayConfig", "GatewayStore", "GatewayTesting", "GatewayUpstream", "MCPMessages", "MCPTransport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
    ]
)

for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + strictness
}
