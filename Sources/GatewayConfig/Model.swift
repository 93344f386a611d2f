import Foundation
public import GatewayRouting

/// The whole of gateway.yaml, validated. Values here are final: env vars expanded, defaults applied.
public struct GatewayConfiguration: Sendable, Equatable {
    public var entryPoints: [EntryPoint]
    public var publicURL: PublicURL
    public var store: StoreConfiguration?
    public var auth: AuthConfiguration?
    public var routers: [RouterConfiguration]
    public var services: [String: ServiceConfiguration]
    public var log: LogConfiguration
    /// Named middlewares (`middlewares:`), applied by the routers that list them.
    public var middlewares: [String: MiddlewareConfiguration] = [:]
    /// `audit:`; nil: no audit log.
    public var audit: AuditConfiguration?
    /// `metrics:`; nil: no metrics endpoint.
    public var metrics: MetricsConfiguration?
    /// `admin:`; nil: no `/admin` page.
    public var admin: AdminConfiguration?
    /// `tracing:`; nil: no traces (and no cost).
    public var tracing: TracingConfiguration?
    /// `cluster:`; nil: this instance does not forward requests to others (it still records its
    /// sessions in the store and takes over the sessions of an instance that is gone).
    public var cluster: ClusterConfiguration?
    /// `shutdownGrace`: how long a stopping instance lets requests in flight finish before it ends
    /// its stdio children and releases their sessions to the other instances.
    public var shutdownGrace: Duration = ConfigurationDefaults.clusterShutdownGrace
    /// `store.encryptionKey` (and `store.previousEncryptionKeys`): what seals the users' upstream
    /// tokens at rest; nil when none is configured (then no service may use `oauth`).
    public var storeKeys: StoreKeys?
    /// `limits:`: how many long-lived client sessions of each transport one instance holds.
    public var limits: SessionLimits = .default

    public init(
        entryPoints: [EntryPoint], publicURL: PublicURL, store: StoreConfiguration?, auth: AuthConfiguration?,
        routers: [RouterConfiguration], services: [String: ServiceConfiguration], log: LogConfiguration,
        middlewares: [String: MiddlewareConfiguration] = [:]
    ) {
        self.middlewares = middlewares
        self.entryPoints = entryPoints
        self.publicURL = publicURL
        self.store = store
        self.auth = auth
        self.routers = routers
        self.services = services
        self.log = log
    }
}

/// `cluster:`: how the instances sharing one store reach each other. A request naming a stdio or
/// group session another live instance holds is forwarded there (one hop), signed with `secret`.
public struct ClusterConfiguration: Sendable, Equatable {
    /// How the other instances reach this one (a private address), e.g. `http://10.0.0.5:8080`.
    public var advertiseURL: String
    /// The HMAC key of forwarded requests (at least 32 characters), the same on every instance.
    public var secret: String
    /// An instance whose heartbeat is older than this is gone: its sessions are taken over.
    public var heartbeatTimeout: Duration = .seconds(10)

    public init(advertiseURL: String, secret: String, heartbeatTimeout: Duration = .seconds(10)) {
        self.advertiseURL = advertiseURL
        self.secret = secret
        self.heartbeatTimeout = heartbeatTimeout
    }
}

extension ClusterConfiguration: CustomStringConvertible, CustomDebugStringConvertible {
    /// The secret never prints.
    public var description: String { "cluster(advertiseURL: \(advertiseURL), secret: [redacted], heartbeatTimeout: \(heartbeatTimeout))" }
    public var debugDescription: String { description }
}

/// `audit:`: one JSON object per line for every MCP request and every security event.
public struct AuditConfiguration: Sendable, Equatable {
    public enum Arguments: String, Sendable, Equatable, CaseIterable {
        /// No tool arguments in the log.
        case none
        /// The arguments with the values of sensitive-looking keys replaced by "[redacted]".
        case redacted
        /// The arguments as the client sent them.
        case full
    }

    /// A file path, or "-" for standard output.
    public var file: String
    public var arguments: Arguments = .none
    /// Keys whose values are redacted (case-insensitive substring match).
    public var redactKeys: [String] = AuditConfiguration.defaultRedactKeys

    public static let defaultRedactKeys = ["password", "secret", "token", "key", "authorization", "cookie"]

    public init(file: String, arguments: Arguments = .none, redactKeys: [String] = AuditConfiguration.defaultRedactKeys) {
        self.file = file
        self.arguments = arguments
        self.redactKeys = redactKeys
    }
}

/// `metrics:`: Prometheus metrics of requests, upstreams, sessions, children, sign-ins and the store.
public struct MetricsConfiguration: Sendable, Equatable {
    /// The scrape path (`metrics.prometheus.path`).
    public var path: String = "/metrics"
    /// The entry point that serves it (`metrics.prometheus.entryPoint`); nil: every entry point.
    public var entryPoint: String?
    /// Client addresses the path is served to (`metrics.prometheus.allowFrom`); the client is the
    /// address ClientAddressing settled on (behind trusted proxies, the forwarded one).
    public var allowFrom: [AddressRange] = MetricsConfiguration.loopback

    public static let loopback: [AddressRange] = ["127.0.0.0/8", "::1"].compactMap { AddressRange($0) }

    public init() {}
}

/// `tracing:`: OpenTelemetry spans exported over OTLP/HTTP (protobuf).
public struct TracingConfiguration: Sendable, Equatable {
    /// `tracing.otlp.endpoint`: the collector's base URL (`http://127.0.0.1:4318`); spans go to
    /// `<endpoint>/v1/traces`.
    public var endpoint: String
    public var serviceName: String = "mcp-gateway"
    /// The share of new traces recorded (0…1); a sampled incoming `traceparent` is always followed.
    public var sampleRatio: Double = 1.0

    public init(endpoint: String) {
        self.endpoint = endpoint
    }
}

/// `admin:`: the `/admin` page, for the users its allow-list admits (signed in through the
/// gateway's own sign-in). The allow-list reloads live.
public struct AdminConfiguration: Sendable, Equatable {
    public var allow: AllowList

    public init(allow: AllowList) {
        self.allow = allow
    }
}

/// `limits:`: caps on client connections and on the sessions that each hold one open for their
/// whole life, so one instance's memory and descriptors stay within what the operator planned for.
public struct SessionLimits: Sendable, Equatable {
    /// MCP-over-WebSocket sessions, across entry points.
    public var webSocketSessions: Int
    /// 2024-11-05 HTTP+SSE sessions, across routers.
    public var legacySSESessions: Int
    /// Client connections held at once, across entry points; nil: half the descriptor limit
    /// (less a reserve), decided at start.
    public var connections: Int?

    public init(webSocketSessions: Int, legacySSESessions: Int, connections: Int? = nil) {
        self.webSocketSessions = webSocketSessions
        self.legacySSESessions = legacySSESessions
        self.connections = connections
    }

    public static let `default` = SessionLimits(webSocketSessions: 1024, legacySSESessions: 1024)
    /// The largest value either key takes: a million sessions is beyond any one process's descriptors.
    public static let ceiling = 1_000_000
}

public struct LogConfiguration: Sendable, Equatable {
    public enum Format: String, Sendable, Equatable, CaseIterable {
        /// swift-log's line format.
        case text
        /// One JSON object per line: `time`, `level`, `logger`, `message`, and the metadata as fields.
        case json
    }

    /// trace, debug, info, notice, warning, error, critical
    public var level: String
    public var format: Format = .text
    /// One line per request (method, path without query, router, status, duration, user, MCP
    /// method and tool) at `info`.
    public var accessLog: Bool = true

    public init(level: String, format: Format = .text, accessLog: Bool = true) {
        self.level = level
        self.format = format
        self.accessLog = accessLog
    }

    public static let `default` = LogConfiguration(level: "info")
}

/// Where the gateway listens. Entry points are static: changing them needs a restart.
public struct EntryPoint: Sendable, Equatable {
    public var name: String
    public var host: String
    public var port: Int
    /// Origins (`scheme://host[:port]`) allowed besides the gateway's own, for browser-based clients.
    public var allowedOrigins: [String]
    /// Host names MCP requests may name besides the public URL's host and the routers' `Host`
    /// rules (`*.example.com` matches one or more labels): anything else is refused, which stops
    /// DNS rebinding.
    public var allowedHosts: [String] = []
    /// Proxies in front whose `X-Forwarded-For` is believed: the client is the right-most address
    /// in it that is not one of these. Empty: the peer address is the client.
    public var trustedProxies: [AddressRange] = []
    /// A connection with no request in flight is closed after this long.
    public var idleTimeout: Duration = ConfigurationDefaults.entryPointIdleTimeout
    /// A request's head must arrive within this long of its first byte (slow-header attacks).
    public var headerTimeout: Duration = ConfigurationDefaults.entryPointHeaderTimeout
    /// `tls`: the entry point speaks https with this certificate; nil: plain HTTP.
    public var tls: TLSSettings?
    /// `http2`: HTTP/2 offered by ALPN next to HTTP/1.1 (needs `tls`).
    public var http2 = false
    /// `fastRelay`: 2026-07-28 calls to plain HTTP upstreams that every stage admits at once are
    /// relayed by the connection handler (off: every request takes the full pipeline).
    public var fastRelay = true
    /// `redirectTo`: every request but the health checks answered with a 308 to this https entry
    /// point.
    public var redirectTo: String?

    public init(name: String, host: String, port: Int, allowedOrigins: [String]) {
        self.name = name
        self.host = host
        self.port = port
        self.allowedOrigins = allowedOrigins
    }
}

/// `entryPoints.<e>.tls`: the certificate chain and key (PEM files, watched and reloaded when they
/// change) and the lowest TLS version accepted.
public struct TLSSettings: Sendable, Equatable {
    public enum Version: String, Sendable, Equatable, CaseIterable {
        case tls12 = "1.2"
        case tls13 = "1.3"
    }

    public var certFile: String
    public var keyFile: String
    public var minVersion: Version = .tls12

    public init(certFile: String, keyFile: String, minVersion: Version = .tls12) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.minVersion = minVersion
    }
}

/// How clients reach the gateway (scheme, host, port); the OAuth issuer and resource URLs derive from it.
public struct PublicURL: Sendable, Equatable, CustomStringConvertible {
    public var scheme: String
    public var host: String
    public var port: Int?

    public init(scheme: String, host: String, port: Int?) {
        self.scheme = scheme
        self.host = host
        self.port = port
    }

    /// `scheme://host[:port]` with no trailing slash.
    public var origin: String {
        var text = "\(scheme)://\(host)"
        if let port, port != (scheme == "https" ? 443 : 80) { text += ":\(port)" }
        return text
    }

    public var description: String { origin }
}

public struct StoreConfiguration: Sendable, Equatable {
    public var redisURL: String
    /// Prefix of every Redis key the gateway writes.
    public var keyPrefix: String
}

/// AES-256 keys sealing secrets the gateway keeps for users (their upstream OAuth tokens). Each
/// sealed value names the key that sealed it, so a new `encryptionKey` can be rolled in while the
/// old one, listed under `previousEncryptionKeys`, still opens what it sealed until
/// `mcp-gateway admin rotate-store-key` has sealed everything again under the new one.
public struct StoreKeys: Sendable, Equatable, CustomStringConvertible {
    /// 32 bytes: seals everything written from now on.
    public var current: [UInt8]
    /// Older keys, only for opening.
    public var previous: [[UInt8]]

    public init(current: [UInt8], previous: [[UInt8]] = []) {
        self.current = current
        self.previous = previous
    }

    public var description: String { "StoreKeys([redacted], \(previous.count) previous)" }
}

public struct AllowList: Sendable, Equatable {
    public var users: [String]
    public var orgs: [String]
    public var teams: [String]
    /// Groups of external JWT callers (their issuer's `groupsClaim`).
    public var groups: [String] = []
    /// Must be written explicitly: an empty list lets nobody in.
    public var anyone: Bool

    public init(users: [String] = [], orgs: [String] = [], teams: [String] = [], groups: [String] = [], anyone: Bool = false) {
        self.users = users
        self.orgs = orgs
        self.teams = teams
        self.groups = groups
        self.anyone = anyone
    }
}

/// `auth.jwt.issuers.<name>`: an external OpenID Connect / OAuth issuer (Keycloak, Auth0, Entra,
/// Okta, …) whose access tokens routers with `auth: jwt` accept.
public struct JWTIssuer: Sendable, Equatable {
    public var name: String
    /// The exact `iss` of its tokens.
    public var issuer: String
    /// Where its keys are; nil: `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    public var jwksURL: String?
    /// What `aud` must contain.
    public var audience: String
    /// The claim that names the user for allow-lists and policies.
    public var userClaim: String = "sub"
    public var emailClaim: String?
    /// A claim holding the user's groups (a list, or a space-separated string).
    public var groupsClaim: String?

    public init(name: String, issuer: String, jwksURL: String? = nil, audience: String) {
        self.name = name
        self.issuer = issuer
        self.jwksURL = jwksURL
        self.audience = audience
    }
}

public struct GitHubConfiguration: Sendable, Equatable {
    public var clientID: String
    public var clientSecret: String
    public var webURL: String
    public var apiURL: String
    /// A token with `read:org` (of an org member, or a GitHub App installation) used to re-check
    /// org and team membership after sign-in; without it membership is what sign-in read.
    public var membershipToken: String = ""
    /// How long a membership check is trusted.
    public var membershipTTL: Duration = .seconds(300)

    public init(clientID: String, clientSecret: String, webURL: String = "https://github.com", apiURL: String = "https://api.github.com") {
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.webURL = webURL
        self.apiURL = apiURL
    }
}

/// One `auth.clientOverrides` entry.
public struct ClientOverride: Sendable, Equatable {
    /// A registered client id or a Client ID Metadata Document URL.
    public var clientID: String
    public var accessTokenTTL: Duration?

    public init(clientID: String, accessTokenTTL: Duration?) {
        self.clientID = clientID
        self.accessTokenTTL = accessTokenTTL
    }
}

/// One `auth.clients` entry: a machine client using the `client_credentials` grant.
public struct MachineClient: Sendable, Equatable {
    public var id: String
    /// SHA-256 of the client secret (`mcp-gateway new-key` prints a secret and its hash).
    public var secretHash: [UInt8]
    /// The login its tokens carry, for allow-lists and policies.
    public var user: String
    /// The scopes it may be granted; empty: `mcp`.
    public var scopes: [String]

    public init(id: String, secretHash: [UInt8], user: String, scopes: [String]) {
        self.id = id
        self.secretHash = secretHash
        self.user = user
        self.scopes = scopes
    }
}

public struct AuthConfiguration: Sendable, Equatable {
    public var github: GitHubConfiguration?
    public var allow: AllowList
    public var accessTokenTTL: Duration
    public var refreshTokenTTL: Duration
    /// `auth.refreshReuseGrace`: how long after a refresh was answered the same client presenting
    /// the same token again gets that answer again instead of revoking the sign-in (a client whose
    /// racing refreshes reach the gateway one after the other).
    public var refreshReuseGrace: Duration = ConfigurationDefaults.refreshReuseGrace
    public var registration: RegistrationConfiguration
    /// Local identity provider: user name → scrypt hash (`mcp-gateway hash-password`).
    public var localUsers: [String: String]
    public var signing: SigningConfiguration
    public var clientMetadata: ClientMetadataConfiguration
    /// Limits on local-account sign-in (password guessing).
    public var localLimits: LocalSignInLimits = .default
    /// `auth.token.rateLimit`: `/token` requests per client address (IPv6: per /64) per minute.
    public var tokenRateLimit: Int = ConfigurationDefaults.tokenRateLimit
    /// `auth.apiKeys`: static keys for routers with `auth: apiKey` (reload live).
    public var apiKeys: [APIKey] = []
    /// `auth.clientOverrides`: per-client settings (a longer access-token life for clients that
    /// never refresh); in file order, the first matching entry wins.
    public var clientOverrides: [ClientOverride] = []
    /// `auth.clients`: machine clients the operator registers for the `client_credentials` grant
    /// (reload live).
    public var machineClients: [MachineClient] = []
    /// `auth.jwt.issuers`: external issuers for routers with `auth: jwt` (reload live).
    public var jwtIssuers: [JWTIssuer] = []

    /// The access-token lifetime for a client: its override, else `accessTokenTTL`.
    public func accessTokenLifetime(for clientID: String) -> Duration {
        clientOverrides.first { $0.clientID == clientID }?.accessTokenTTL ?? accessTokenTTL
    }

    /// The longest any access token lives: signing keys stay published and revocation marks are
    /// kept at least this long.
    public var longestAccessTokenTTL: Duration {
        clientOverrides.compactMap(\.accessTokenTTL).reduce(accessTokenTTL, max)
    }

    public init(
        github: GitHubConfiguration? = nil, allow: AllowList = AllowList(), accessTokenTTL: Duration = ConfigurationDefaults.accessTokenTTL,
        refreshTokenTTL: Duration = ConfigurationDefaults.refreshTokenTTL, registration: RegistrationConfiguration = .default,
        localUsers: [String: String] = [:], signing: SigningConfiguration = .default, clientMetadata: ClientMetadataConfiguration = .default
    ) {
        self.github = github
        self.allow = allow
        self.accessTokenTTL = accessTokenTTL
        self.refreshTokenTTL = refreshTokenTTL
        self.registration = registration
        self.localUsers = localUsers
        self.signing = signing
        self.clientMetadata = clientMetadata
    }

    /// Equal except for the allow-list and the API keys, which reload live.
    public func equalsIgnoringAllowList(_ other: AuthConfiguration) -> Bool {
        var copy = other
        copy.allow = allow
        copy.apiKeys = apiKeys
        copy.machineClients = machineClients
        copy.jwtIssuers = jwtIssuers
        return copy == self
    }
}

/// Access-token signing keys.
public struct SigningConfiguration: Sendable, Equatable {
    public enum Algorithm: String, Sendable, Equatable {
        case es256 = "ES256"
        case rs256 = "RS256"
    }

    public var algorithm: Algorithm
    /// A new key starts signing when the current one is this old.
    public var rotationInterval: Duration

    public init(algorithm: Algorithm, rotationInterval: Duration) {
        self.algorithm = algorithm
        self.rotationInterval = rotationInterval
    }

    public static let `default` = SigningConfiguration(algorithm: .es256, rotationInterval: .seconds(30 * 86400))
}

/// Client ID Metadata Documents: https client_ids whose metadata the gateway fetches.
public struct ClientMetadataConfiguration: Sendable, Equatable {
    public var enabled: Bool
    public var fetchTimeout: Duration
    /// Fetch documents from private, loopback and link-local addresses (tests, private networks).
    public var allowPrivateAddresses: Bool
    /// PEM file of extra CA certificates trusted for fetches (tests, private PKI).
    public var caFile: String?
    /// Documents used when a fetch fails, keyed by client id; each value is the document's JSON
    /// fields (client_name, redirect_uris, token_endpoint_auth_method, ...).
    public var pinned: [String: PinnedClientMetadata]

    public init(enabled: Bool = true, fetchTimeout: Duration = .seconds(5), allowPrivateAddresses: Bool = false, caFile: String? = nil, pinned: [String: PinnedClientMetadata] = ClientMetadataConfiguration.builtInPins) {
        self.enabled = enabled
        self.fetchTimeout = fetchTimeout
        self.allowPrivateAddresses = allowPrivateAddresses
        self.caFile = caFile
        self.pinned = pinned
    }

    public static let `default` = ClientMetadataConfiguration()

    /// Claude's client id: its document is often unreachable from datacenters (a bot challenge),
    /// so the gateway knows it without being told. A `pinned` entry for the same id replaces it.
    public static let claudeClientID = "https://claude.ai/oauth/mcp-oauth-client-metadata"

    public static let builtInPins: [String: PinnedClientMetadata] = [
        claudeClientID: PinnedClientMetadata(document: [
            "client_id": claudeClientID,
            "client_name": "Claude",
            "client_uri": "https://claude.ai",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        ])
    ]
}

/// A client metadata document, as published (any of its fields), used when fetching it fails.
/// Kept as JSON text so the configuration stays a value; validated like a fetched document.
public struct PinnedClientMetadata: Sendable, Equatable {
    /// The document as canonical JSON (sorted keys).
    public var json: String

    public init(document: [String: Any]) {
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        self.json = String(decoding: data, as: UTF8.self)
    }

    /// The document's fields.
    public var document: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
    }

    public var clientName: String? { document["client_name"] as? String }
    public var redirectURIs: [String] { document["redirect_uris"] as? [String] ?? [] }
}

/// Dynamic client registration (RFC 7591) limits.
public struct RegistrationConfiguration: Sendable, Equatable {
    /// Registrations per client address (IPv6: per /64) per minute.
    public var rateLimit: Int
    /// A client unused for this long expires.
    public var unusedClientTTL: Duration
    /// Registrations per minute for the whole gateway, whatever their address.
    public var globalRateLimit: Int = 600

    public init(rateLimit: Int, unusedClientTTL: Duration, globalRateLimit: Int = 600) {
        self.rateLimit = rateLimit
        self.unusedClientTTL = unusedClientTTL
        self.globalRateLimit = globalRateLimit
    }

    public static let `default` = RegistrationConfiguration(rateLimit: 60, unusedClientTTL: .seconds(30 * 86400))
}

/// Local-account password checks: each costs ~270 ms of CPU (scrypt), so they are bounded per
/// address, per account and for the whole gateway.
public struct LocalSignInLimits: Sendable, Equatable {
    /// Sign-in attempts per client address (IPv6: per /64) per minute.
    public var perAddress: Int
    /// Failed attempts per account within 15 minutes before that account's sign-in pauses.
    public var perAccount: Int
    /// Password checks per minute for the whole gateway (unauthenticated work).
    public var global: Int

    public init(perAddress: Int, perAccount: Int, global: Int) {
        self.perAddress = perAddress
        self.perAccount = perAccount
        self.global = global
    }

    public static let `default` = LocalSignInLimits(perAddress: 10, perAccount: 10, global: 120)
}

public enum RouterAuth: String, Sendable, Equatable {
    /// Protected: a credential of one of the router's `authMethods` is required (the default:
    /// a bearer token of the gateway's own authorization server).
    case oauth
    /// No authentication: anyone who can reach the gateway can use the route.
    case none
}

/// The kinds of credentials a protected router accepts (`auth: oauth`, `auth: apiKey`, or a list).
public enum AuthMethod: String, Sendable, Equatable, Hashable, CaseIterable {
    /// An access token of the gateway's own authorization server.
    case oauth
    /// A static key of `auth.apiKeys`.
    case apiKey
    /// An access token of an external issuer (`auth.jwt.issuers`).
    case jwt
}

/// `auth.apiKeys.<name>`: a static key for headless callers, stored as its SHA-256 only.
public struct APIKey: Sendable, Equatable {
    public var name: String
    /// SHA-256 of the key.
    public var hash: [UInt8]
    /// The login allow-lists and policies see for this key's caller.
    public var user: String

    public init(name: String, hash: [UInt8], user: String) {
        self.name = name
        self.hash = hash
        self.user = user
    }
}

public struct RouterConfiguration: Sendable, Equatable {
    public var name: String
    public var ruleText: String
    public var rule: Rule
    public var priority: Int
    public var service: String
    public var auth: RouterAuth
    /// Narrows the global allow-list for this router; nil means the global list applies.
    public var allow: AllowList?
    /// Entry points this router serves; empty means all.
    public var entryPoints: [String]
    /// Path of the router's MCP endpoint (`/time/mcp`, or `/mcp` on a host router).
    public var mcpPath: String
    /// Names of the identity headers sent upstream on this protected router.
    public var identityHeaders: IdentityHeaderNames = .default
    /// Names of `middlewares:` entries applied to this router's MCP requests, in this order.
    public var middlewares: [String] = []
    /// `tools`, `resources`, `prompts` and `policies`: what each caller sees and may call.
    public var callPolicy = CallPolicy()
    /// On a protected router (`auth` not `none`): the credentials it accepts.
    public var authMethods: Set<AuthMethod> = [.oauth]

    /// `legacySSE`: the 2024-11-05 HTTP+SSE transport beside Streamable HTTP (default on).
    public var legacySSE = true

    /// Whether the gateway's own OAuth serves this router (resource metadata, sign-in).
    public var acceptsOAuth: Bool { auth == .oauth && authMethods.contains(.oauth) }

    /// The 2024-11-05 HTTP+SSE endpoints, beside the MCP endpoint: `/time/mcp` → `/time/sse` and
    /// `/time/messages`; an `mcpPath` not ending in `/mcp` gets them under it.
    public var legacySSEPaths: (stream: String, messages: String) {
        let base = mcpPath.hasSuffix("/mcp") ? String(mcpPath.dropLast(4)) : mcpPath
        return (base + "/sse", base + "/messages")
    }
}

/// Like Traefik's `authResponseHeaders`: which headers carry the verified identity upstream.
public struct IdentityHeaderNames: Sendable, Equatable {
    public var user: String
    public var email: String
    public var clientID: String

    public init(user: String, email: String, clientID: String) {
        self.user = user
        self.email = email
        self.clientID = clientID
    }

    public static let `default` = IdentityHeaderNames(user: "X-Forwarded-User", email: "X-Forwarded-Email", clientID: "X-Forwarded-Client-Id")

    public var all: [String] { [user, email, clientID] }
}

public enum ServiceConfiguration: Sendable, Equatable {
    case http(HTTPServiceConfiguration)
    case stdio(StdioServiceConfiguration)
    /// A virtual server: other services behind one MCP endpoint.
    case group(GroupServiceConfiguration)

    public var maxRequestBodyBytes: Int {
        switch self {
        case .http(let http): http.maxRequestBodyBytes
        case .stdio(let stdio): stdio.maxRequestBodyBytes
        case .group(let group): group.maxRequestBodyBytes
        }
    }
}

/// `services.<s>.group`: several services served as one MCP server. Their tools, prompts and
/// resources are listed together (named by `prefix` and `separator`), calls go to the member
/// that has the name, and with `broadcast` one call can go to several members at once.
public struct GroupServiceConfiguration: Sendable, Equatable {
    /// When an exposed name carries its member's name.
    public enum Prefix: String, Sendable, Equatable, CaseIterable {
        /// Always `<member><separator><name>`.
        case always
        /// Only names that more than one member has.
        case conditional
        /// Never: on a clash the first member (in `members` order) wins; the clash is logged.
        case never
    }

    public var name: String
    /// Other services (http or stdio), in order.
    public var members: [String]
    public var prefix: Prefix = .conditional
    public var separator: String = "__"
    /// Expose `broadcast__<tool>` and `broadcast__by_tag__<tag>`.
    public var broadcast = false
    public var broadcastTimeout: Duration = .seconds(30)
    public var maxRequestBodyBytes: Int = ConfigurationDefaults.maxRequestBodyBytes

    public init(name: String, members: [String]) {
        self.name = name
        self.members = members
    }
}

public struct HTTPServiceConfiguration: Sendable, Equatable {
    public var name: String
    /// Absolute http(s) URL of the upstream MCP endpoint.
    public var url: String
    /// Added to every upstream request; values may hold secrets and are never logged.
    public var headers: [(name: String, value: String)]
    public var connectTimeout: Duration
    /// Time to the upstream's response head; an open SSE stream has no idle timeout.
    public var responseHeaderTimeout: Duration
    public var maxRequestBodyBytes: Int
    /// On `auth: none` routers, pass the client's `Authorization` header to this upstream (it
    /// checks credentials of its own). Never on protected routers: there it is the gateway's token.
    public var passAuthorization = false
    /// `auth`: the gateway's own credentials for this upstream (resolved secrets; never logged).
    public var credentials: UpstreamCredentials?
    /// `identityToken`: a short-lived JWT naming the caller, signed with the gateway's keys.
    public var identityToken: IdentityTokenSettings?
    /// `services.<s>.tags`: names groups broadcast to (`broadcast__by_tag__<tag>`).
    public var tags: [String] = []
    /// `oauth`: the upstream wants each user's own OAuth token (a per-user connection).
    public var oauth: UpstreamOAuthSettings?

    public init(name: String, url: String, headers: [(name: String, value: String)], connectTimeout: Duration, responseHeaderTimeout: Duration, maxRequestBodyBytes: Int) {
        self.name = name
        self.url = url
        self.headers = headers
        self.connectTimeout = connectTimeout
        self.responseHeaderTimeout = responseHeaderTimeout
        self.maxRequestBodyBytes = maxRequestBodyBytes
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.passAuthorization == rhs.passAuthorization && lhs.oauth == rhs.oauth && lhs.credentials == rhs.credentials && lhs.identityToken == rhs.identityToken && lhs.name == rhs.name && lhs.url == rhs.url && lhs.connectTimeout == rhs.connectTimeout
            && lhs.responseHeaderTimeout == rhs.responseHeaderTimeout && lhs.maxRequestBodyBytes == rhs.maxRequestBodyBytes
            && lhs.headers.map(\.name) == rhs.headers.map(\.name) && lhs.headers.map(\.value) == rhs.headers.map(\.value)
    }
}

/// `services.<s>.http.oauth`: the upstream is a protected MCP server; every user connects their
/// own account once (`/connect/<service>`) and the gateway calls it with that user's token.
public struct UpstreamOAuthSettings: Sendable, Equatable, CustomStringConvertible {
    public enum Provider: String, Sendable, Equatable {
        /// The MCP authorization spec: discovery from the upstream's 401, PKCE, `resource`.
        case mcp
        /// The user's GitHub token from the gateway's own GitHub sign-in.
        case github
    }

    public var provider: Provider = .mcp
    /// The upstream's authorization server (issuer URL); nil: discovered from its 401.
    public var authorizationServer: String?
    /// A client id registered at the upstream's authorization server; nil: the gateway's Client ID
    /// Metadata Document where supported (an https `publicURL`), else dynamic registration.
    public var clientID: String?
    /// For a confidential `clientID` (resolved secret; never logged).
    public var clientSecret: String?
    public var scopes: [String] = []

    public init() {}

    public var description: String {
        "UpstreamOAuthSettings(provider: \(provider.rawValue), authorizationServer: \(authorizationServer ?? "discovered"), clientID: \(clientID ?? "automatic"), clientSecret: \(clientSecret == nil ? "none" : "[redacted]"), scopes: \(scopes))"
    }
}

/// `services.<s>.http.identityToken`: the header that carries the caller's signed identity and the
/// token's lifetime.
public struct IdentityTokenSettings: Sendable, Equatable {
    public var header: String = "X-MCP-Identity"
    public var ttl: Duration = .seconds(300)

    public init() {}
}

/// `services.<s>.http.auth`: how the gateway authenticates itself to an upstream. The values are
/// secrets (resolved from `env://`, `file://` or given literally); descriptions never show them.
public enum UpstreamCredentials: Sendable, Equatable, CustomStringConvertible {
    /// `Authorization: Bearer <token>`.
    case bearer(String)
    /// A header of the upstream's choosing.
    case apiKey(header: String, value: String)
    /// `Authorization: Basic base64(username:password)`.
    case basic(username: String, password: String)
    /// A query parameter on every upstream request.
    case query(name: String, value: String)

    /// The header fields these credentials add (none for `query`).
    public var headerFields: [(name: String, value: String)] {
        switch self {
        case .bearer(let token): [("Authorization", "Bearer \(token)")]
        case .apiKey(let header, let value): [(header, value)]
        case .basic(let username, let password): [("Authorization", "Basic " + Data("\(username):\(password)".utf8).base64EncodedString())]
        case .query: []
        }
    }

    /// The query item these credentials add (`name=value`, percent-encoded), for `query`.
    public var queryItem: String? {
        guard case .query(let name, let value) = self else { return nil }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        let encode = { (text: String) in text.addingPercentEncoding(withAllowedCharacters: allowed) ?? "" }
        return "\(encode(name))=\(encode(value))"
    }

    public var description: String {
        switch self {
        case .bearer: "bearer([redacted])"
        case .apiKey(let header, _): "apiKey(\(header): [redacted])"
        case .basic(let username, _): "basic(\(username):[redacted])"
        case .query(let name, _): "query(\(name)=[redacted])"
        }
    }
}

public struct StdioServiceConfiguration: Sendable, Equatable {
    public var name: String
    /// `services.<s>.tags`: names groups broadcast to (`broadcast__by_tag__<tag>`).
    public var tags: [String] = []
    public var command: String
    public var args: [String]
    public var env: [String: String]
    public var cwd: String?
    public var maxSessions: Int
    /// Sessions one caller (a signed-in user; on `auth: none` routes an address) may hold at once,
    /// so one caller cannot take every session.
    public var maxSessionsPerUser: Int = ConfigurationDefaults.maxSessionsPerUser
    public var idleTimeout: Duration
    public var requestTimeout: Duration?
    public var shutdownGrace: Duration
    public var startTimeout: Duration
    public var spares: Int
    public var maxRequestBodyBytes: Int
    /// `passIdentity: env`: each session's child starts with the caller's identity in
    /// MCP_GATEWAY_USER, MCP_GATEWAY_SUBJECT and MCP_GATEWAY_CLIENT_ID.
    public var passIdentity: Bool = false
    /// 2026-07-28 clients: whether a child may serve several identities (`shared`) or only one
    /// (`user`, the default: stdio servers keep state).
    public var isolation: Isolation = .user
    public var pool: PoolSettings = .default
    /// SSE comment sent on a 2026-07-28 response stream that has been quiet this long, so proxies
    /// and clients do not time it out.
    public var sseKeepAlive: Duration = .seconds(15)
    /// `services.<s>.sse`: not a process but a remote server speaking only the 2024-11-05
    /// HTTP+SSE transport; each "child" is one SSE connection to it (its `url`, `headers`,
    /// `auth`, `connectTimeout`), bridged for every client like a stdio child.
    public var sse: HTTPServiceConfiguration?

    public enum Isolation: String, Sendable, Equatable {
        case user
        case shared
    }

    /// Children for 2026-07-28 clients: `min` initialized and waiting (no spawn on the request
    /// path), at most `max` per identity (`user`) or in all (`shared`), ended after `idleTimeout`.
    public struct PoolSettings: Sendable, Equatable {
        public var min: Int
        public var max: Int
        public var idleTimeout: Duration?

        public init(min: Int, max: Int, idleTimeout: Duration?) {
            self.min = min
            self.max = max
            self.idleTimeout = idleTimeout
        }

        public static let `default` = PoolSettings(min: 0, max: 1, idleTimeout: nil)
    }
}

public enum ConfigurationDefaults {
    /// `/token` requests per client address per minute: an MCP client needs a few an hour; a
    /// guesser of codes or refresh tokens gets no more than this.
    public static let tokenRateLimit = 120
    public static let maxRequestBodyBytes = 4 * 1024 * 1024
    public static let connectTimeout: Duration = .seconds(5)
    public static let responseHeaderTimeout: Duration = .seconds(60)
    public static let accessTokenTTL: Duration = .seconds(3600)
    public static let refreshTokenTTL: Duration = .seconds(720 * 3600)
    public static let refreshReuseGrace: Duration = .seconds(10)
    /// The longest `auth.refreshReuseGrace`: past a minute a replay is not a race.
    public static let longestRefreshReuseGrace: Duration = .seconds(60)
    public static let maxSessions = 100
    public static let maxSessionsPerUser = 10
    public static let idleTimeout: Duration = .seconds(600)
    public static let shutdownGrace: Duration = .seconds(5)
    /// The top-level `shutdownGrace` (requests in flight at SIGTERM).
    public static let clusterShutdownGrace: Duration = .seconds(15)
    public static let startTimeout: Duration = .seconds(30)
    public static let redisKeyPrefix = "mcpgw:"
    public static let entryPointIdleTimeout: Duration = .seconds(60)
    public static let entryPointHeaderTimeout: Duration = .seconds(10)
}

extension RouterConfiguration {
    /// The router's MCP endpoint as an absolute URL: the RFC 8707 resource (token audience) and the
    /// RFC 9728 `resource`. A router whose rule requires a Host is reached at that host (with the
    /// public URL's scheme and port); any other router at the public URL.
    public func resourceURL(publicURL: PublicURL) -> String {
        for matcher in rule.requiredMatchers {
            if case .host(let host) = matcher {
                var origin = PublicURL(scheme: publicURL.scheme, host: host.lowercased(), port: publicURL.port)
                if host.contains(":") { origin.port = nil }
                return origin.origin + mcpPath
            }
        }
        return publicURL.origin + mcpPath
    }
}
