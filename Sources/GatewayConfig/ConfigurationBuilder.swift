import Foundation
import GatewayRouting
import Yams

/// Turns the YAML tree into the typed model. Every section is read even after an error,
/// so `mcp-gateway check` lists all problems in one run.
struct ConfigurationBuilder {
    let reader: NodeReader

    static let topLevelKeys = ["entryPoints", "publicURL", "store", "auth", "middlewares", "routers", "services", "log", "audit", "metrics", "admin", "tracing", "cluster", "shutdownGrace", "limits"]

    func build(root: Node) -> GatewayConfiguration? {
        guard let top = reader.mapping(root, "", allowed: Self.topLevelKeys) else { return nil }

        let entryPoints = buildEntryPoints(top["entryPoints"], root: root)
        let publicURL = buildPublicURL(top["publicURL"], root: root)
        let store = top["store"].flatMap { buildStore($0) }
        let storeKeys = top["store"].flatMap { buildStoreKeys($0) }
        let auth = top["auth"].flatMap { buildAuth($0) }
        let services = buildServices(top["services"], root: root)
        let middlewares = buildMiddlewares(top["middlewares"])
        let routers = buildRouters(top["routers"], root: root, services: services, entryPoints: entryPoints, middlewares: middlewares)
        let log = top["log"].flatMap { buildLog($0) } ?? .default
        // Every optional section is read even when another failed, so one run lists every problem.
        let audit = top["audit"].flatMap { buildAudit($0) }
        let admin = top["admin"].flatMap { buildAdmin($0) }
        let tracing = top["tracing"].flatMap { buildTracing($0) }
        let cluster = top["cluster"].flatMap { buildCluster($0, store: store, storeNode: top["store"]) }
        let shutdownGrace = top["shutdownGrace"].map { reader.duration($0, "shutdownGrace") }
        let metrics = top["metrics"].flatMap { buildMetrics($0, entryPointNames: Self.names(in: top["entryPoints"])) }
        let limits = top["limits"].map { buildLimits($0) }
        let sectionFailed = (limits.map { $0 == nil } ?? false) || (top["audit"] != nil && audit == nil) || (top["admin"] != nil && admin == nil)
            || (top["tracing"] != nil && tracing == nil) || (top["metrics"] != nil && metrics == nil)
            || (top["cluster"] != nil && cluster == nil) || (shutdownGrace.map { $0 == nil } ?? false)

        if let services, let servicesNode = top["services"] {
            checkUpstreamOAuth(services.byName, routers: routers ?? [], servicesNode: servicesNode, storeKeys: storeKeys, auth: auth, storeNode: top["store"], root: root)
        }
        if let routers, auth?.jwtIssuers.isEmpty ?? true, let jwtRouter = routers.first(where: { $0.authMethods.contains(.jwt) && $0.auth == .oauth }),
           let node = top["routers"]
        {
            reader.report("router \(jwtRouter.name) takes auth: jwt, but no issuer is configured under auth.jwt.issuers", "routers.\(jwtRouter.name).auth", node)
        }
        guard let entryPoints, let publicURL, let services, !services.failed, let routers, let middlewares, !middlewares.failed, !sectionFailed else { return nil }
        var configuration = GatewayConfiguration(
            entryPoints: entryPoints, publicURL: publicURL, store: store, auth: auth,
            routers: routers, services: services.byName, log: log, middlewares: middlewares.byName
        )
        configuration.audit = audit
        configuration.metrics = metrics
        configuration.admin = admin
        configuration.tracing = tracing
        configuration.cluster = cluster
        configuration.storeKeys = storeKeys
        if let grace = shutdownGrace ?? nil { configuration.shutdownGrace = grace }
        if let limits = limits ?? nil { configuration.limits = limits }
        return configuration
    }

    // MARK: entry points

    private func buildEntryPoints(_ node: Node?, root: Node) -> [EntryPoint]? {
        guard let node else {
            reader.report("missing \"entryPoints\": say where the gateway listens, e.g. entryPoints: { web: { address: \"127.0.0.1:8080\" } }", "", root)
            return nil
        }
        let entries = reader.orderedEntries(node, "entryPoints")
        if entries.isEmpty {
            reader.report("at least one entry point is needed", "entryPoints", node)
            return nil
        }
        var result: [EntryPoint] = []
        var failed = false
        var seenAddresses: [String: String] = [:]
        var redirects: [(String, String, Node)] = []
        for entry in entries {
            let path = "entryPoints.\(entry.key)"
            guard let fields = reader.mapping(entry.value, path, allowed: ["address", "allowedOrigins", "allowedHosts", "trustedProxies", "idleTimeout", "headerTimeout", "tls", "http2", "redirectTo", "fastRelay"]) else { failed = true; continue }
            guard let addressNode = fields["address"] else {
                reader.report("missing \"address\" (host:port, e.g. \"127.0.0.1:8080\" or \":8080\")", path, entry.value)
                failed = true
                continue
            }
            guard let address = reader.string(addressNode, "\(path).address"),
                  let (host, port) = Self.parseListenAddress(address)
            else {
                if case .scalar = addressNode, let text = try? reader.expander.expand(addressNode.scalar?.string ?? "") {
                    reader.report("invalid address \"\(text)\"; expected host:port with a port from 1 to 65535", "\(path).address", addressNode)
                }
                failed = true
                continue
            }
            if let other = seenAddresses["\(host):\(port)"] {
                reader.report("address \(host):\(port) is already used by entry point \"\(other)\"", "\(path).address", addressNode)
                failed = true
            }
            seenAddresses["\(host):\(port)"] = entry.key
            var origins: [String] = []
            if let originsNode = fields["allowedOrigins"] {
                guard let list = reader.stringList(originsNode, "\(path).allowedOrigins") else { failed = true; continue }
                for (index, origin) in list.enumerated() {
                    guard let normalized = Self.normalizedOrigin(origin) else {
                        let element = originsNode.sequence.map { Array($0) }?[index] ?? originsNode
                        reader.report("\"\(origin)\" is not an origin; write scheme://host[:port] with no path", "\(path).allowedOrigins[\(index)]", element)
                        failed = true
                        continue
                    }
                    origins.append(normalized)
                }
            }
            var entryPoint = EntryPoint(name: entry.key, host: host, port: port, allowedOrigins: origins)
            if let hostsNode = fields["allowedHosts"] {
                guard let list = reader.stringList(hostsNode, "\(path).allowedHosts") else { failed = true; continue }
                for (index, name) in list.enumerated() {
                    let lowered = name.lowercased()
                    let valid = !lowered.isEmpty && lowered.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-.:[]*".contains($0)) }
                    guard valid, !lowered.dropFirst().contains("*"), !lowered.hasPrefix("*") || lowered.hasPrefix("*.") else {
                        let element = hostsNode.sequence.map { Array($0) }?[index] ?? hostsNode
                        reader.report("\"\(name)\" is not a host name; write a name such as mcp.example.com or *.example.com (no scheme, port or path)", "\(path).allowedHosts[\(index)]", element)
                        failed = true
                        continue
                    }
                    entryPoint.allowedHosts.append(lowered)
                }
            }
            if let proxiesNode = fields["trustedProxies"] {
                guard let list = reader.stringList(proxiesNode, "\(path).trustedProxies") else { failed = true; continue }
                for (index, text) in list.enumerated() {
                    guard let range = AddressRange(text) else {
                        let element = proxiesNode.sequence.map { Array($0) }?[index] ?? proxiesNode
                        reader.report("\"\(text)\" is not an address or CIDR range (e.g. 10.0.0.0/8, 127.0.0.1, fd00::/8)", "\(path).trustedProxies[\(index)]", element)
                        failed = true
                        continue
                    }
                    entryPoint.trustedProxies.append(range)
                }
            }
            if let idleNode = fields["idleTimeout"] {
                guard let idle = reader.duration(idleNode, "\(path).idleTimeout") else { failed = true; continue }
                entryPoint.idleTimeout = idle
            }
            if let headerNode = fields["headerTimeout"] {
                guard let header = reader.duration(headerNode, "\(path).headerTimeout") else { failed = true; continue }
                entryPoint.headerTimeout = header
            }
            if let tlsNode = fields["tls"] {
                guard let tls = buildTLS(tlsNode, path: "\(path).tls") else { failed = true; continue }
                entryPoint.tls = tls
            }
            if let fastRelayNode = fields["fastRelay"] {
                guard let fastRelay = reader.boolean(fastRelayNode, "\(path).fastRelay") else { failed = true; continue }
                entryPoint.fastRelay = fastRelay
            }
            if let http2Node = fields["http2"] {
                guard let http2 = reader.boolean(http2Node, "\(path).http2") else { failed = true; continue }
                if http2, entryPoint.tls == nil {
                    reader.report("http2 needs tls on the same entry point (HTTP/2 is offered by ALPN during the TLS handshake)", "\(path).http2", http2Node)
                    failed = true
                }
                entryPoint.http2 = http2
            }
            if let redirectNode = fields["redirectTo"] {
                guard let target = reader.nonEmptyString(redirectNode, "\(path).redirectTo") else { failed = true; continue }
                entryPoint.redirectTo = target
                redirects.append((entry.key, target, redirectNode))
            }
            result.append(entryPoint)
        }
        let names = entries.map(\.key)
        for (name, target, node) in redirects {
            guard names.contains(target) else {
                reader.report("unknown entry point \"\(target)\" (defined: \(names.joined(separator: ", ")))", "entryPoints.\(name).redirectTo", node)
                failed = true
                continue
            }
            // A target that failed to read has been reported already.
            guard let targetEntry = result.first(where: { $0.name == target }) else { continue }
            if targetEntry.tls == nil || target == name {
                reader.report("redirectTo must name another entry point that has tls", "entryPoints.\(name).redirectTo", node)
                failed = true
            }
        }
        return failed ? nil : result
    }

    private func buildTLS(_ node: Node, path: String) -> TLSSettings? {
        guard let fields = reader.mapping(node, path, allowed: ["certFile", "keyFile", "minVersion"]) else { return nil }
        guard let certNode = fields["certFile"], let keyNode = fields["keyFile"] else {
            reader.report("tls needs certFile and keyFile (PEM files: the certificate chain and its private key)", path, node)
            return nil
        }
        guard let certFile = reader.nonEmptyString(certNode, "\(path).certFile"), let keyFile = reader.nonEmptyString(keyNode, "\(path).keyFile") else { return nil }
        var settings = TLSSettings(certFile: certFile, keyFile: keyFile)
        if let versionNode = fields["minVersion"] {
            // YAML reads 1.2 as a number; the text is what counts.
            let text = versionNode.scalar?.string ?? ""
            guard let version = TLSSettings.Version(rawValue: text) else {
                reader.report("minVersion must be \"1.2\" or \"1.3\", got \"\(text)\"", "\(path).minVersion", versionNode)
                return nil
            }
            settings.minVersion = version
        }
        return settings
    }

    static func parseListenAddress(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard !host.contains(" "), !host.contains("/") else { return nil }
        return (host, port)
    }

    /// `scheme://host[:port]`, lower-cased, default port dropped; nil when not an origin.
    static func normalizedOrigin(_ text: String) -> String? {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host?.lowercased(), !host.isEmpty,
              components.path.isEmpty || components.path == "/", components.query == nil, components.fragment == nil,
              components.user == nil
        else { return nil }
        var origin = "\(scheme)://\(host)"
        if let port = components.port, port != (scheme == "https" ? 443 : 80) { origin += ":\(port)" }
        return origin
    }

    // MARK: public URL

    private func buildPublicURL(_ node: Node?, root: Node) -> PublicURL? {
        guard let node else {
            reader.report("missing \"publicURL\": the URL clients use to reach the gateway, e.g. \"https://mcp.example.com\"", "", root)
            return nil
        }
        guard let text = reader.string(node, "publicURL") else { return nil }
        var trimmed = text
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let components = URLComponents(string: trimmed), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else {
            reader.report("\"\(text)\" is not an absolute http(s) URL", "publicURL", node)
            return nil
        }
        guard components.path.isEmpty, components.query == nil, components.fragment == nil, components.user == nil else {
            reader.report("must be an origin only (scheme://host[:port]); the gateway does not run under a path prefix", "publicURL", node)
            return nil
        }
        return PublicURL(scheme: scheme, host: host.lowercased(), port: components.port)
    }

    // MARK: store

    private func buildStore(_ node: Node) -> StoreConfiguration? {
        guard let fields = reader.mapping(node, "store", allowed: ["redis", "encryptionKey", "previousEncryptionKeys"]) else { return nil }
        guard let redisNode = fields["redis"] else { return nil }
        guard let redis = reader.mapping(redisNode, "store.redis", allowed: ["url", "keyPrefix"]) else { return nil }
        guard let urlNode = redis["url"] else {
            reader.report("missing \"url\", e.g. \"redis://127.0.0.1:6379/0\"", "store.redis", redisNode)
            return nil
        }
        guard let url = reader.string(urlNode, "store.redis.url") else { return nil }
        guard let components = URLComponents(string: url), components.scheme == "redis" || components.scheme == "unix",
              components.scheme == "unix" || components.host != nil
        else {
            reader.report("\"\(url)\" is not a redis:// URL (redis://[:password@]host[:port][/db]) or unix:///path/to/socket", "store.redis.url", urlNode)
            return nil
        }
        let prefix = redis["keyPrefix"].flatMap { reader.string($0, "store.redis.keyPrefix") } ?? ConfigurationDefaults.redisKeyPrefix
        return StoreConfiguration(redisURL: url, keyPrefix: prefix)
    }

    /// `store.encryptionKey` and `store.previousEncryptionKeys`: 32 bytes each, base64 (standard
    /// or URL alphabet), usually `env://` or `file://` references.
    private func buildStoreKeys(_ node: Node) -> StoreKeys? {
        guard case .mapping = node, let keyNode = node["encryptionKey"] else { return nil }
        guard let current = encryptionKey(keyNode, "store.encryptionKey") else { return nil }
        var previous: [[UInt8]] = []
        if let listNode = node["previousEncryptionKeys"] {
            guard case .sequence(let items) = listNode else {
                reader.report("a list of keys, e.g. [\"env://MCPGW_OLD_STORE_KEY\"]", "store.previousEncryptionKeys", listNode)
                return nil
            }
            for (index, item) in items.enumerated() {
                guard let key = encryptionKey(item, "store.previousEncryptionKeys[\(index)]") else { return nil }
                previous.append(key)
            }
        }
        return StoreKeys(current: current, previous: previous)
    }

    private func encryptionKey(_ node: Node, _ path: String) -> [UInt8]? {
        guard let text = secret(node, path) else { return nil }
        var base64 = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), data.count == 32 else {
            reader.report("the key must be 32 random bytes in base64 (e.g. from `openssl rand -base64 32`)", path, node)
            return nil
        }
        return Array(data)
    }

    /// `services.<s>.http.oauth` needs a key to seal users' tokens with, routers that know who the
    /// user is, and (for `provider: github`) the gateway's GitHub sign-in.
    private func checkUpstreamOAuth(
        _ services: [String: ServiceConfiguration], routers: [RouterConfiguration], servicesNode: Node, storeKeys: StoreKeys?, auth: AuthConfiguration?,
        storeNode: Node?, root: Node
    ) {
        for (name, service) in services.sorted(by: { $0.key < $1.key }) {
            guard case .http(let http) = service, let oauth = http.oauth else { continue }
            let node = servicesNode[name]?["http"]?["oauth"] ?? servicesNode
            let path = "services.\(name).http.oauth"
            if storeKeys == nil {
                reader.report("users' upstream tokens are stored encrypted: set store.encryptionKey (32 random bytes, base64, e.g. env://MCPGW_STORE_KEY)", path, node)
            }
            if oauth.provider == .github, auth?.github == nil {
                reader.report("provider: github uses the gateway's GitHub sign-in: configure auth.github", "\(path).provider", node)
            }
            for router in routers where router.service == name && router.auth == .none {
                reader.report("router \(router.name) has auth: none, but \(name) calls its upstream with each signed-in user's own token", path, node)
            }
        }
    }

    // MARK: auth

    private func buildAuth(_ node: Node) -> AuthConfiguration? {
        guard let fields = reader.mapping(node, "auth", allowed: ["github", "allow", "accessTokenTTL", "refreshTokenTTL", "refreshReuseGrace", "registration", "local", "signing", "clientMetadata", "token", "apiKeys", "clientOverrides", "clients", "jwt"]) else { return nil }
        var apiKeys: [APIKey] = []
        var apiKeysFailed = false
        if let keysNode = fields["apiKeys"] {
            for entry in reader.orderedEntries(keysNode, "auth.apiKeys") {
                let path = "auth.apiKeys.\(entry.key)"
                guard Self.isNameToken(entry.key) else {
                    reader.report("key names are letters, digits, '_', '-' or '.'", path, entry.keyNode)
                    apiKeysFailed = true
                    continue
                }
                guard let keyFields = reader.mapping(entry.value, path, allowed: ["hash", "user"]) else { apiKeysFailed = true; continue }
                guard let hashNode = keyFields["hash"], let hashText = reader.string(hashNode, "\(path).hash") else {
                    if keyFields["hash"] == nil { reader.report("missing \"hash\": the key's \"sha256:<hex>\" from `mcp-gateway hash-key` (never the key itself)", path, entry.value) }
                    apiKeysFailed = true
                    continue
                }
                guard let hash = Self.sha256Hex(hashText) else {
                    reader.report("hash must be \"sha256:\" and 64 hex digits, as `mcp-gateway hash-key` prints it (a key itself never goes in this file)", "\(path).hash", hashNode)
                    apiKeysFailed = true
                    continue
                }
                guard let userNode = keyFields["user"], let user = reader.nonEmptyString(userNode, "\(path).user") else {
                    if keyFields["user"] == nil { reader.report("missing \"user\": the login allow-lists and policies see for this key", path, entry.value) }
                    apiKeysFailed = true
                    continue
                }
                apiKeys.append(APIKey(name: entry.key, hash: hash, user: user))
            }
        }
        var github: GitHubConfiguration?
        if let githubNode = fields["github"], let gh = reader.mapping(githubNode, "auth.github", allowed: ["clientID", "clientSecret", "webURL", "apiURL", "membershipToken", "membershipTTL"]) {
            let clientID = gh["clientID"].flatMap { reader.string($0, "auth.github.clientID") } ?? ""
            let clientSecret = gh["clientSecret"].flatMap { reader.string($0, "auth.github.clientSecret") } ?? ""
            let webURL = gh["webURL"].flatMap { httpURL($0, "auth.github.webURL") } ?? "https://github.com"
            let apiURL = gh["apiURL"].flatMap { httpURL($0, "auth.github.apiURL") } ?? "https://api.github.com"
            github = GitHubConfiguration(clientID: clientID, clientSecret: clientSecret, webURL: webURL, apiURL: apiURL)
            github?.membershipToken = gh["membershipToken"].flatMap { reader.string($0, "auth.github.membershipToken") } ?? ""
            if let node = gh["membershipTTL"], let ttl = reader.duration(node, "auth.github.membershipTTL") { github?.membershipTTL = ttl }
        }
        let allow = fields["allow"].flatMap { buildAllowList($0, "auth.allow") } ?? AllowList()
        let accessTTL = fields["accessTokenTTL"].flatMap { reader.duration($0, "auth.accessTokenTTL") } ?? ConfigurationDefaults.accessTokenTTL
        let refreshTTL = fields["refreshTokenTTL"].flatMap { reader.duration($0, "auth.refreshTokenTTL") } ?? ConfigurationDefaults.refreshTokenTTL
        var registration = RegistrationConfiguration.default
        if let registrationNode = fields["registration"],
           let entries = reader.mapping(registrationNode, "auth.registration", allowed: ["rateLimit", "globalRateLimit", "unusedClientTTL"])
        {
            if let node = entries["rateLimit"], let value = reader.integer(node, "auth.registration.rateLimit", range: 1...1_000_000) {
                registration.rateLimit = value
            }
            if let node = entries["globalRateLimit"], let value = reader.integer(node, "auth.registration.globalRateLimit", range: 1...10_000_000) {
                registration.globalRateLimit = value
            }
            if let node = entries["unusedClientTTL"], let value = reader.duration(node, "auth.registration.unusedClientTTL") {
                registration.unusedClientTTL = value
            }
        }
        var tokenRateLimit = ConfigurationDefaults.tokenRateLimit
        if let tokenNode = fields["token"], let entries = reader.mapping(tokenNode, "auth.token", allowed: ["rateLimit"]),
           let node = entries["rateLimit"], let value = reader.integer(node, "auth.token.rateLimit", range: 1...1_000_000)
        {
            tokenRateLimit = value
        }
        var localUsers: [String: String] = [:]
        var localLimits = LocalSignInLimits.default
        let local = fields["local"].flatMap { reader.mapping($0, "auth.local", allowed: ["users", "rateLimit"]) }
        if let limitsNode = local?["rateLimit"], let limits = reader.mapping(limitsNode, "auth.local.rateLimit", allowed: ["perAddress", "perAccount", "global"]) {
            if let node = limits["perAddress"], let value = reader.integer(node, "auth.local.rateLimit.perAddress", range: 1...1_000_000) { localLimits.perAddress = value }
            if let node = limits["perAccount"], let value = reader.integer(node, "auth.local.rateLimit.perAccount", range: 1...1_000_000) { localLimits.perAccount = value }
            if let node = limits["global"], let value = reader.integer(node, "auth.local.rateLimit.global", range: 1...1_000_000) { localLimits.global = value }
        }
        if let usersNode = local?["users"] {
            for entry in reader.orderedEntries(usersNode, "auth.local.users") {
                let path = "auth.local.users.\(entry.key)"
                guard entry.key.range(of: #"^[A-Za-z0-9._-]{1,64}$"#, options: .regularExpression) != nil else {
                    reader.report("user names are 1–64 letters, digits, '.', '_' or '-'", path, entry.keyNode)
                    continue
                }
                guard let hash = reader.string(entry.value, path) else { continue }
                guard hash.range(of: #"^\$scrypt\$ln=\d+,r=\d+,p=\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$"#, options: .regularExpression) != nil else {
                    reader.report("expected a password hash from `mcp-gateway hash-password` ($scrypt$…), never a plain password", path, entry.value)
                    continue
                }
                localUsers[entry.key] = hash
            }
        }
        var signing = SigningConfiguration.default
        if let signingNode = fields["signing"], let entries = reader.mapping(signingNode, "auth.signing", allowed: ["algorithm", "rotationInterval"]) {
            if let node = entries["algorithm"], let text = reader.string(node, "auth.signing.algorithm") {
                if let algorithm = SigningConfiguration.Algorithm(rawValue: text.uppercased()) {
                    signing.algorithm = algorithm
                } else {
                    reader.report("algorithm must be ES256 (the default) or RS256, got \"\(text)\"", "auth.signing.algorithm", node)
                }
            }
            if let node = entries["rotationInterval"], let value = reader.duration(node, "auth.signing.rotationInterval") {
                if value < accessTTL {
                    reader.report("rotationInterval must be at least accessTokenTTL", "auth.signing.rotationInterval", node)
                } else {
                    signing.rotationInterval = value
                }
            }
        }
        var clientMetadata = ClientMetadataConfiguration.default
        if let node = fields["clientMetadata"] {
            clientMetadata = buildClientMetadata(node)
        }
        var auth = AuthConfiguration(
            github: github, allow: allow, accessTokenTTL: accessTTL, refreshTokenTTL: refreshTTL, registration: registration, localUsers: localUsers,
            signing: signing, clientMetadata: clientMetadata
        )
        auth.localLimits = localLimits
        auth.tokenRateLimit = tokenRateLimit
        if let node = fields["refreshReuseGrace"], let grace = reader.duration(node, "auth.refreshReuseGrace") {
            if grace > ConfigurationDefaults.longestRefreshReuseGrace {
                reader.report("refreshReuseGrace must be at most 60s (0s: any second presentation revokes the sign-in)", "auth.refreshReuseGrace", node)
            } else {
                auth.refreshReuseGrace = grace
            }
        }
        auth.apiKeys = apiKeys
        _ = apiKeysFailed
        if let node = fields["clientOverrides"] { auth.clientOverrides = buildClientOverrides(node) }
        if let node = fields["clients"] { auth.machineClients = buildMachineClients(node) }
        if let node = fields["jwt"] { auth.jwtIssuers = buildJWTIssuers(node) }
        if let rotation = fields["signing"].flatMap({ reader.mapping($0, "auth.signing") })?["rotationInterval"],
           auth.signing.rotationInterval < auth.longestAccessTokenTTL
        {
            reader.report("rotationInterval must be at least the longest access-token TTL (auth.clientOverrides included)", "auth.signing.rotationInterval", rotation)
        }
        return auth
    }

    private func buildClientOverrides(_ node: Node) -> [ClientOverride] {
        guard case .sequence(let entries) = node else {
            if !reader.isNull(node) { reader.report("expected a list of {clientID, accessTokenTTL}", "auth.clientOverrides", node) }
            return []
        }
        var overrides: [ClientOverride] = []
        for (index, entry) in entries.enumerated() {
            let path = "auth.clientOverrides[\(index)]"
            guard let fields = reader.mapping(entry, path, allowed: ["clientID", "accessTokenTTL"]) else { continue }
            guard let idNode = fields["clientID"], let clientID = reader.nonEmptyString(idNode, "\(path).clientID") else {
                if fields["clientID"] == nil { reader.report("missing \"clientID\": a registered client id or a Client ID Metadata Document URL", path, entry) }
                continue
            }
            var ttl: Duration?
            if let ttlNode = fields["accessTokenTTL"], let value = reader.duration(ttlNode, "\(path).accessTokenTTL") {
                if value < .seconds(60) || value > .seconds(30 * 86400) {
                    reader.report("accessTokenTTL must be between 1m and 30d", "\(path).accessTokenTTL", ttlNode)
                    continue
                }
                ttl = value
            }
            overrides.append(ClientOverride(clientID: clientID, accessTokenTTL: ttl))
        }
        return overrides
    }

    private func buildJWTIssuers(_ node: Node) -> [JWTIssuer] {
        guard let fields = reader.mapping(node, "auth.jwt", allowed: ["issuers"]), let issuersNode = fields["issuers"] else { return [] }
        var issuers: [JWTIssuer] = []
        for entry in reader.orderedEntries(issuersNode, "auth.jwt.issuers") {
            let path = "auth.jwt.issuers.\(entry.key)"
            guard Self.isNameToken(entry.key) else {
                reader.report("issuer names are letters, digits, '_', '-' or '.'", path, entry.keyNode)
                continue
            }
            guard let entryFields = reader.mapping(entry.value, path, allowed: ["issuer", "jwksURL", "audience", "userClaim", "emailClaim", "groupsClaim"]) else { continue }
            guard let issuerNode = entryFields["issuer"], let issuer = reader.nonEmptyString(issuerNode, "\(path).issuer") else {
                if entryFields["issuer"] == nil { reader.report("missing \"issuer\": the exact iss of its tokens, e.g. https://keycloak.example/realms/acme", path, entry.value) }
                continue
            }
            guard let audienceNode = entryFields["audience"], let audience = reader.nonEmptyString(audienceNode, "\(path).audience") else {
                if entryFields["audience"] == nil { reader.report("missing \"audience\": what aud must contain (tokens for other services are refused)", path, entry.value) }
                continue
            }
            guard Self.isTrustedKeySource(issuer) else {
                reader.report("the issuer must be an https URL (http only on a loopback address)", "\(path).issuer", issuerNode)
                continue
            }
            var configured = JWTIssuer(name: entry.key, issuer: issuer, audience: audience)
            if let jwksNode = entryFields["jwksURL"], let url = reader.nonEmptyString(jwksNode, "\(path).jwksURL") {
                guard Self.isTrustedKeySource(url) else {
                    reader.report("jwksURL must be an https URL (http only on a loopback address)", "\(path).jwksURL", jwksNode)
                    continue
                }
                configured.jwksURL = url
            }
            if let claimNode = entryFields["userClaim"], let claim = reader.nonEmptyString(claimNode, "\(path).userClaim") { configured.userClaim = claim }
            if let claimNode = entryFields["emailClaim"], let claim = reader.nonEmptyString(claimNode, "\(path).emailClaim") { configured.emailClaim = claim }
            if let claimNode = entryFields["groupsClaim"], let claim = reader.nonEmptyString(claimNode, "\(path).groupsClaim") { configured.groupsClaim = claim }
            if let clash = issuers.first(where: { $0.issuer == issuer }) {
                reader.report("issuer \"\(issuer)\" is already configured as \(clash.name)", "\(path).issuer", issuerNode)
                continue
            }
            issuers.append(configured)
        }
        return issuers
    }

    /// Keys are fetched over https; plain http only from this machine (tests, a sidecar).
    static func isTrustedKeySource(_ text: String) -> Bool {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(), let host = components.host?.lowercased() else { return false }
        if scheme == "https" { return !host.isEmpty }
        return scheme == "http" && ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host)
    }

    private func buildMachineClients(_ node: Node) -> [MachineClient] {
        var clients: [MachineClient] = []
        for entry in reader.orderedEntries(node, "auth.clients") {
            let path = "auth.clients.\(entry.key)"
            guard Self.isNameToken(entry.key) else {
                reader.report("client ids are letters, digits, '_', '-' or '.'", path, entry.keyNode)
                continue
            }
            guard let fields = reader.mapping(entry.value, path, allowed: ["secretHash", "user", "scopes"]) else { continue }
            guard let hashNode = fields["secretHash"], let hashText = reader.string(hashNode, "\(path).secretHash") else {
                if fields["secretHash"] == nil { reader.report("missing \"secretHash\": the secret's \"sha256:<hex>\" from `mcp-gateway new-key` (never the secret itself)", path, entry.value) }
                continue
            }
            guard let hash = Self.sha256Hex(hashText) else {
                reader.report("secretHash must be \"sha256:\" and 64 hex digits, as `mcp-gateway new-key` or `hash-key` prints it", "\(path).secretHash", hashNode)
                continue
            }
            guard let userNode = fields["user"], let user = reader.nonEmptyString(userNode, "\(path).user") else {
                if fields["user"] == nil { reader.report("missing \"user\": the login allow-lists and policies see for this client", path, entry.value) }
                continue
            }
            let scopes = fields["scopes"].flatMap { reader.stringList($0, "\(path).scopes") } ?? []
            // The gateway's scope vocabulary is one scope (AuthorizationServer.Scopes).
            if let unknown = scopes.first(where: { $0 != "mcp" }), let node = fields["scopes"] {
                reader.report("unknown scope \"\(unknown)\": the gateway grants one scope, mcp", "\(path).scopes", node)
                continue
            }
            clients.append(MachineClient(id: entry.key, secretHash: hash, user: user, scopes: scopes))
        }
        return clients
    }

    /// The 32 bytes of `sha256:<64 hex digits>`.
    static func sha256Hex(_ text: String) -> [UInt8]? {
        guard text.hasPrefix("sha256:") else { return nil }
        let hex = Array(text.dropFirst(7).utf8)
        guard hex.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        var index = 0
        while index < 64 {
            guard let high = Self.hexValue(hex[index]), let low = Self.hexValue(hex[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private func buildClientMetadata(_ node: Node) -> ClientMetadataConfiguration {
        var result = ClientMetadataConfiguration.default
        let path = "auth.clientMetadata"
        guard let fields = reader.mapping(node, path, allowed: ["enabled", "fetchTimeout", "allowPrivateAddresses", "caFile", "pinned"]) else { return result }
        if let node = fields["enabled"], let value = reader.boolean(node, "\(path).enabled") { result.enabled = value }
        if let node = fields["fetchTimeout"], let value = reader.duration(node, "\(path).fetchTimeout") { result.fetchTimeout = value }
        if let node = fields["allowPrivateAddresses"], let value = reader.boolean(node, "\(path).allowPrivateAddresses") {
            result.allowPrivateAddresses = value
        }
        if let node = fields["caFile"], let value = reader.nonEmptyString(node, "\(path).caFile") { result.caFile = value }
        if let pinnedNode = fields["pinned"] {
            for entry in reader.orderedEntries(pinnedNode, "\(path).pinned") {
                let entryPath = "\(path).pinned.\(entry.key)"
                guard let components = URLComponents(string: entry.key), components.scheme == "https", components.host?.isEmpty == false,
                      !components.path.isEmpty, components.path != "/"
                else {
                    reader.report("pinned documents are keyed by their client id, an https URL with a path", entryPath, entry.keyNode)
                    continue
                }
                // The whole document as the client publishes it (paste it as it is); checked here
                // for what makes it unusable, and at start like a fetched one.
                guard let document = reader.mapping(entry.value, entryPath) else { continue }
                var json: [String: Any] = [:]
                var usable = true
                for (key, node) in document {
                    guard let value = reader.jsonValue(node, "\(entryPath).\(key)") else { usable = false; continue }
                    json[key] = value
                }
                guard usable else { continue }
                guard let redirects = json["redirect_uris"] as? [String], !redirects.isEmpty else {
                    reader.report("redirect_uris is required: a list of the client's redirect URIs", entryPath, entry.value)
                    continue
                }
                if let method = json["token_endpoint_auth_method"], method as? String != "none" {
                    reader.report("documents can only describe public clients: token_endpoint_auth_method must be none", "\(entryPath).token_endpoint_auth_method", document["token_endpoint_auth_method"] ?? entry.value)
                    continue
                }
                if let clientID = json["client_id"], clientID as? String != entry.key {
                    reader.report("client_id must equal the key the document is pinned under (\(entry.key))", "\(entryPath).client_id", document["client_id"] ?? entry.value)
                    continue
                }
                result.pinned[entry.key] = PinnedClientMetadata(document: json)
            }
        }
        return result
    }

    private func buildAllowList(_ node: Node, _ path: String) -> AllowList? {
        guard let fields = reader.mapping(node, path, allowed: ["users", "orgs", "teams", "groups", "anyone"]) else { return nil }
        return allowList(fields, path)
    }

    private func allowList(_ fields: [String: Node], _ path: String) -> AllowList {
        var list = AllowList()
        list.users = fields["users"].flatMap { reader.stringList($0, "\(path).users") } ?? []
        list.orgs = fields["orgs"].flatMap { reader.stringList($0, "\(path).orgs") } ?? []
        list.teams = fields["teams"].flatMap { reader.stringList($0, "\(path).teams") } ?? []
        list.groups = fields["groups"].flatMap { reader.stringList($0, "\(path).groups") } ?? []
        list.anyone = fields["anyone"].flatMap { reader.boolean($0, "\(path).anyone") } ?? false
        if let teamsNode = fields["teams"] {
            for (index, team) in list.teams.enumerated() where team.split(separator: "/").count != 2 {
                let element = teamsNode.sequence.map { Array($0) }?[index] ?? teamsNode
                reader.report("team \"\(team)\" must be written as org/team-slug", "\(path).teams[\(index)]", element)
            }
        }
        return list
    }

    private func httpURL(_ node: Node, _ path: String) -> String? {
        guard let text = reader.string(node, path) else { return nil }
        var trimmed = text
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let components = URLComponents(string: trimmed), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else {
            reader.report("\"\(text)\" is not an absolute http(s) URL", path, node)
            return nil
        }
        return trimmed
    }

    // MARK: services

    struct ServiceTable {
        var byName: [String: ServiceConfiguration]
        /// Every defined name, valid or not, so routers naming a broken service are not also misreported.
        var names: [String]
        var failed: Bool
        /// Each group's node and members, for the member checks (and their positions).
        var groupNodes: [String: (node: Node, members: [String])] = [:]
    }

    private func buildServices(_ node: Node?, root: Node) -> ServiceTable? {
        guard let node else {
            reader.report("missing \"services\": define at least one http or stdio service", "", root)
            return nil
        }
        var table = ServiceTable(byName: [:], names: [], failed: false)
        var failed = false
        for entry in reader.orderedEntries(node, "services") {
            let path = "services.\(entry.key)"
            table.names.append(entry.key)
            guard let fields = reader.mapping(entry.value, path, allowed: ["http", "stdio", "sse", "group", "tags"]) else { failed = true; continue }
            var tags: [String] = []
            if let tagsNode = fields["tags"], let list = reader.stringList(tagsNode, "\(path).tags") {
                for tag in list where !Self.isNameToken(tag) {
                    reader.report("tag \"\(tag)\" must be letters, digits, '_', '-' or '.'", "\(path).tags", tagsNode)
                    failed = true
                }
                tags = list
            }
            let kinds = ["http", "stdio", "sse", "group"].filter { fields[$0] != nil }
            guard kinds.count == 1 else {
                reader.report(
                    kinds.isEmpty ? "missing \"http\" (url of an MCP server), \"stdio\" (command to spawn), \"sse\" (url of a 2024-11-05 HTTP+SSE server) or \"group\" (other services as one)" : "a service is one of \"http\", \"stdio\", \"sse\" or \"group\", not \(kinds.joined(separator: " and "))",
                    path, entry.value
                )
                failed = true
                continue
            }
            if let http = fields["http"] {
                if var service = buildHTTPService(name: entry.key, node: http, path: "\(path).http") {
                    service.tags = tags
                    table.byName[entry.key] = .http(service)
                } else { failed = true }
            } else if let stdio = fields["stdio"] {
                if var service = buildStdioService(name: entry.key, node: stdio, path: "\(path).stdio") {
                    service.tags = tags
                    table.byName[entry.key] = .stdio(service)
                } else { failed = true }
            } else if let sse = fields["sse"] {
                if var service = buildSSEService(name: entry.key, node: sse, path: "\(path).sse") {
                    service.tags = tags
                    table.byName[entry.key] = .stdio(service)
                } else { failed = true }
            } else if let group = fields["group"] {
                if fields["tags"] != nil {
                    reader.report("a group has no tags of its own: tag its members", "\(path).tags", fields["tags"] ?? group)
                    failed = true
                }
                if let (service, wrong) = buildGroupService(name: entry.key, node: group, path: "\(path).group") {
                    // Members are checked below even when another key of the group is wrong.
                    table.groupNodes[entry.key] = (group, service.members)
                    if wrong { failed = true } else { table.byName[entry.key] = .group(service) }
                } else { failed = true }
            }
        }
        // Members are checked once every service is known.
        for (name, (node, members)) in table.groupNodes.sorted(by: { $0.key < $1.key }) {
            let membersNode = reader.mapping(node, "services.\(name).group")?["members"] ?? node
            let items: [Node] = if case .sequence(let sequence) = membersNode { Array(sequence) } else { [] }
            for (index, member) in members.enumerated() {
                let at = index < items.count ? items[index] : membersNode
                if member == name {
                    reader.report("a group cannot be its own member", "services.\(name).group.members", at)
                    failed = true
                } else if !table.names.contains(member) {
                    let known = Set(table.names.map(ConfigurationLoader.displayName)).sorted().joined(separator: ", ")
                    reader.report("service \"\(member)\" is not defined (defined: \(known))", "services.\(name).group.members", at)
                    failed = true
                } else if table.groupNodes[member] != nil {
                    reader.report("service \"\(member)\" is a group: groups take http and stdio services", "services.\(name).group.members", at)
                    failed = true
                } else if members.firstIndex(of: member) != index {
                    reader.report("service \"\(member)\" is listed twice", "services.\(name).group.members", at)
                    failed = true
                }
            }
        }
        table.failed = failed
        return table
    }

    /// Tool-name-safe text: letters, digits, `_`, `-`, `.`.
    static func isNameToken(_ text: String) -> Bool {
        !text.isEmpty && text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-.".unicodeScalars.contains($0)) }
    }

    /// The group, and whether any of its keys was wrong; nil without readable members.
    private func buildGroupService(name: String, node: Node, path: String) -> (GroupServiceConfiguration, failed: Bool)? {
        guard let fields = reader.mapping(node, path, allowed: ["members", "prefix", "separator", "broadcast", "broadcastTimeout", "maxRequestBodySize"]) else { return nil }
        var failed = false
        guard let membersNode = fields["members"] else {
            reader.report("missing \"members\": the services this group serves as one, e.g. [time, notes]", path, node)
            return nil
        }
        guard let members = reader.stringList(membersNode, "\(path).members") else { return nil }
        if members.isEmpty {
            reader.report("a group needs at least one member", "\(path).members", membersNode)
            failed = true
        }
        var group = GroupServiceConfiguration(name: name, members: members)
        if let prefixNode = fields["prefix"], let text = reader.string(prefixNode, "\(path).prefix") {
            if let prefix = GroupServiceConfiguration.Prefix(rawValue: text) { group.prefix = prefix } else {
                reader.report("prefix must be always, conditional or never, got \"\(text)\"", "\(path).prefix", prefixNode)
                failed = true
            }
        }
        if let separatorNode = fields["separator"], let text = reader.string(separatorNode, "\(path).separator") {
            if Self.isNameToken(text) { group.separator = text } else {
                reader.report("separator must be letters, digits, '_', '-' or '.' (tool names allow no others)", "\(path).separator", separatorNode)
                failed = true
            }
        }
        if let broadcastNode = fields["broadcast"] { group.broadcast = reader.boolean(broadcastNode, "\(path).broadcast") ?? false }
        if let timeoutNode = fields["broadcastTimeout"] {
            if let timeout = reader.duration(timeoutNode, "\(path).broadcastTimeout") { group.broadcastTimeout = timeout } else { failed = true }
        }
        if let sizeNode = fields["maxRequestBodySize"] {
            if let size = reader.byteSize(sizeNode, "\(path).maxRequestBodySize") { group.maxRequestBodyBytes = size } else { failed = true }
        }
        return (group, failed)
    }

    private func buildHTTPService(name: String, node: Node, path: String) -> HTTPServiceConfiguration? {
        guard let fields = reader.mapping(node, path, allowed: ["url", "headers", "connectTimeout", "responseHeaderTimeout", "maxRequestBodySize", "passAuthorization", "auth", "identityToken", "oauth"]) else { return nil }
        guard let urlNode = fields["url"] else {
            reader.report("missing \"url\" of the upstream MCP endpoint, e.g. \"http://127.0.0.1:9100/mcp\"", path, node)
            return nil
        }
        let url = httpURL(urlNode, "\(path).url")
        var headers: [(name: String, value: String)] = []
        var failed = url == nil
        if let headersNode = fields["headers"] {
            if let map = reader.stringMap(headersNode, "\(path).headers") {
                for (headerName, value) in map {
                    if !Self.isHeaderToken(headerName) || Self.hopByHopHeaders.contains(headerName.lowercased()) {
                        reader.report("\"\(headerName)\" cannot be set on upstream requests", "\(path).headers.\(headerName)", headersNode)
                        failed = true
                    } else if value.contains("\r") || value.contains("\n") {
                        reader.report("header values must be one line", "\(path).headers.\(headerName)", headersNode)
                        failed = true
                    } else {
                        headers.append((headerName, value))
                    }
                }
            } else { failed = true }
        }
        let connect = fields["connectTimeout"].map { reader.duration($0, "\(path).connectTimeout") } ?? ConfigurationDefaults.connectTimeout
        let ttfb = fields["responseHeaderTimeout"].map { reader.duration($0, "\(path).responseHeaderTimeout") } ?? ConfigurationDefaults.responseHeaderTimeout
        let body = fields["maxRequestBodySize"].map { reader.byteSize($0, "\(path).maxRequestBodySize") } ?? ConfigurationDefaults.maxRequestBodyBytes
        let passAuthorization = fields["passAuthorization"].map { reader.boolean($0, "\(path).passAuthorization") } ?? false
        var credentials: UpstreamCredentials?
        if let authNode = fields["auth"] {
            credentials = buildCredentials(authNode, path: "\(path).auth")
            if credentials == nil { failed = true }
            if passAuthorization == true, let passNode = fields["passAuthorization"] {
                reader.report("passAuthorization and auth both set the upstream's credentials: choose one", "\(path).passAuthorization", passNode)
                failed = true
            }
            if let credentials, case .apiKey(let header, _) = credentials, headers.contains(where: { $0.name.lowercased() == header.lowercased() }) {
                reader.report("\(header) is set both by headers and by auth.apiKey", "\(path).auth.apiKey.header", authNode)
                failed = true
            }
        }
        var identityToken: IdentityTokenSettings?
        if let identityNode = fields["identityToken"], let entries = reader.mapping(identityNode, "\(path).identityToken", allowed: ["header", "ttl"]) {
            var settings = IdentityTokenSettings()
            if let headerNode = entries["header"], let header = reader.nonEmptyString(headerNode, "\(path).identityToken.header") {
                if Self.isHeaderToken(header), !Self.hopByHopHeaders.contains(header.lowercased()), !["host", "authorization", "cookie"].contains(header.lowercased()) {
                    settings.header = header
                } else {
                    reader.report("\"\(header)\" cannot carry the identity token", "\(path).identityToken.header", headerNode)
                    failed = true
                }
            }
            if let ttlNode = entries["ttl"] {
                if let ttl = reader.duration(ttlNode, "\(path).identityToken.ttl"), ttl >= .seconds(10), ttl <= .seconds(3600) { settings.ttl = ttl } else {
                    reader.report("ttl must be from 10s to 1h", "\(path).identityToken.ttl", ttlNode)
                    failed = true
                }
            }
            identityToken = settings
        } else if fields["identityToken"] != nil {
            failed = true
        }
        var oauth: UpstreamOAuthSettings?
        if let oauthNode = fields["oauth"] {
            oauth = buildUpstreamOAuth(oauthNode, path: "\(path).oauth")
            if oauth == nil { failed = true }
            for (key, clash) in [("auth", fields["auth"] != nil), ("passAuthorization", passAuthorization == true)] where clash {
                reader.report("oauth and \(key) both set the upstream's credentials: choose one", "\(path).oauth", oauthNode)
                failed = true
            }
            if headers.contains(where: { $0.name.lowercased() == "authorization" }) {
                reader.report("oauth sets Authorization itself: remove it from headers", "\(path).oauth", oauthNode)
                failed = true
            }
        }
        guard !failed, let url, let connect, let ttfb, let body, let passAuthorization else { return nil }
        var service = HTTPServiceConfiguration(name: name, url: url, headers: headers, connectTimeout: connect, responseHeaderTimeout: ttfb, maxRequestBodyBytes: body)
        service.oauth = oauth
        service.passAuthorization = passAuthorization
        service.credentials = credentials
        service.identityToken = identityToken
        return service
    }

    /// `oauth: {provider, authorizationServer, clientID, clientSecret, scopes}`.
    private func buildUpstreamOAuth(_ node: Node, path: String) -> UpstreamOAuthSettings? {
        guard let fields = reader.mapping(node, path, allowed: ["provider", "authorizationServer", "clientID", "clientSecret", "scopes"]) else { return nil }
        var settings = UpstreamOAuthSettings()
        var failed = false
        if let providerNode = fields["provider"], let text = reader.string(providerNode, "\(path).provider") {
            if let provider = UpstreamOAuthSettings.Provider(rawValue: text) { settings.provider = provider } else {
                reader.report("provider is mcp (the upstream's own authorization server, the default) or github", "\(path).provider", providerNode)
                failed = true
            }
        }
        if let serverNode = fields["authorizationServer"] {
            if let url = httpURL(serverNode, "\(path).authorizationServer") { settings.authorizationServer = url } else { failed = true }
        }
        if let idNode = fields["clientID"], let id = reader.string(idNode, "\(path).clientID") {
            // `${VAR:-}` left empty means: no registered client, identify automatically.
            settings.clientID = id.isEmpty ? nil : id
        }
        if let secretNode = fields["clientSecret"] {
            if let value = secret(secretNode, "\(path).clientSecret") { settings.clientSecret = value } else { failed = true }
            if settings.clientID == nil {
                reader.report("clientSecret belongs to a clientID: set both", "\(path).clientSecret", secretNode)
                failed = true
            }
        }
        if let scopesNode = fields["scopes"] {
            if let scopes = reader.stringList(scopesNode, "\(path).scopes") {
                if let bad = scopes.first(where: { $0.isEmpty || $0.contains(where: { $0 == " " || $0 == "\"" || $0 == "\\" || $0.asciiValue.map { $0 < 0x21 || $0 > 0x7E } ?? true }) }) {
                    reader.report("\"\(bad)\" is not an OAuth scope token", "\(path).scopes", scopesNode)
                    failed = true
                } else {
                    settings.scopes = scopes
                }
            } else { failed = true }
        }
        if settings.provider == .github, settings.authorizationServer != nil || settings.clientID != nil {
            reader.report("provider: github takes only scopes (the token comes from the gateway's GitHub sign-in)", path, node)
            failed = true
        }
        return failed ? nil : settings
    }

    /// `auth`: exactly one of `bearer`, `apiKey {header, value}`, `basic {username, password}`,
    /// `query {name, value}`; secret values may be `env://` or `file://` references.
    private func buildCredentials(_ node: Node, path: String) -> UpstreamCredentials? {
        guard let fields = reader.mapping(node, path, allowed: ["bearer", "apiKey", "basic", "query"]) else { return nil }
        guard fields.count == 1, let (kind, value) = fields.first else {
            reader.report("auth takes exactly one of bearer, apiKey, basic or query", path, node)
            return nil
        }
        let kindPath = "\(path).\(kind)"
        switch kind {
        case "bearer":
            return secret(value, kindPath).map(UpstreamCredentials.bearer)
        case "apiKey":
            guard let entries = reader.mapping(value, kindPath, allowed: ["header", "value"]),
                  let headerNode = entries["header"], let valueNode = entries["value"], let header = reader.nonEmptyString(headerNode, "\(kindPath).header")
            else {
                if reader.mapping(value, kindPath) != nil { reader.report("apiKey needs header and value", kindPath, value) }
                return nil
            }
            guard Self.isHeaderToken(header), !Self.hopByHopHeaders.contains(header.lowercased()), header.lowercased() != "host" else {
                reader.report("\"\(header)\" cannot carry an API key", "\(kindPath).header", headerNode)
                return nil
            }
            return secret(valueNode, "\(kindPath).value").map { .apiKey(header: header, value: $0) }
        case "basic":
            guard let entries = reader.mapping(value, kindPath, allowed: ["username", "password"]),
                  let userNode = entries["username"], let passwordNode = entries["password"]
            else {
                reader.report("basic needs username and password", kindPath, value)
                return nil
            }
            guard let username = secret(userNode, "\(kindPath).username"), let password = secret(passwordNode, "\(kindPath).password") else { return nil }
            guard !username.contains(":") else {
                reader.report("a Basic user name cannot contain \":\"", "\(kindPath).username", userNode)
                return nil
            }
            return .basic(username: username, password: password)
        default:
            guard let entries = reader.mapping(value, kindPath, allowed: ["name", "value"]),
                  let nameNode = entries["name"], let valueNode = entries["value"], let name = reader.nonEmptyString(nameNode, "\(kindPath).name")
            else {
                reader.report("query needs name and value", kindPath, value)
                return nil
            }
            return secret(valueNode, "\(kindPath).value").map { .query(name: name, value: $0) }
        }
    }

    /// A secret value: `env://NAME`, `file:///path` or a literal; header-safe (one line).
    private func secret(_ node: Node, _ path: String) -> String? {
        guard let text = reader.nonEmptyString(node, path) else { return nil }
        let value: String
        do throws(SecretReference.Failure) {
            value = try SecretReference.resolve(text, environment: reader.expander.environment)
        } catch {
            reader.report(error.message, path, node)
            return nil
        }
        guard !value.contains("\r"), !value.contains("\n") else {
            reader.report("the secret must be one line", path, node)
            return nil
        }
        return value
    }

    /// `sse`: a remote server speaking only the 2024-11-05 HTTP+SSE transport. Its connection keys
    /// are an HTTP service's (`url` of its SSE stream, `headers`, `auth`, `connectTimeout`); its
    /// session keys a stdio service's, since each connection is bridged like a child.
    private func buildSSEService(name: String, node: Node, path: String) -> StdioServiceConfiguration? {
        guard case .mapping(let mapping) = node else {
            reader.report("expected a mapping with url (the server's SSE endpoint, e.g. \"http://127.0.0.1:9200/sse\")", path, node)
            return nil
        }
        let connectionKeys: Set<String> = ["url", "headers", "auth", "connectTimeout"]
        let isConnectionKey = { (key: Node) in key.scalar.map { connectionKeys.contains($0.string) } ?? false }
        let connectionPart = Node.mapping(Node.Mapping(mapping.filter { isConnectionKey($0.key) }, mapping.tag, mapping.style, mapping.mark))
        let sessionPart = Node.mapping(Node.Mapping(mapping.filter { !isConnectionKey($0.key) }, mapping.tag, mapping.style, mapping.mark))
        let connection = buildHTTPService(name: name, node: connectionPart, path: path)
        let sessions = buildStdioService(name: name, node: sessionPart, path: path, remote: true)
        guard let connection, var sessions else { return nil }
        sessions.sse = connection
        return sessions
    }

    private func buildStdioService(name: String, node: Node, path: String, remote: Bool = false) -> StdioServiceConfiguration? {
        let sessionKeys = ["maxSessions", "maxSessionsPerUser", "idleTimeout", "requestTimeout", "shutdownGrace", "startTimeout", "maxRequestBodySize", "isolation", "pool", "sseKeepAlive"]
        let allowed = remote ? sessionKeys + ["url", "headers", "auth", "connectTimeout"] : ["command", "args", "env", "cwd", "spares", "passIdentity"] + sessionKeys
        guard let fields = reader.mapping(node, path, allowed: allowed) else { return nil }
        let command: String?
        if remote {
            command = ""
        } else {
            guard let commandNode = fields["command"] else {
                reader.report("missing \"command\" to spawn, e.g. \"mcp-server-time\"", path, node)
                return nil
            }
            command = reader.nonEmptyString(commandNode, "\(path).command")
        }
        let args = fields["args"].map { reader.stringList($0, "\(path).args") } ?? []
        // Values may be secret references (env://, file://), resolved here and on every reload.
        var envPairs: [(key: String, value: String)]? = []
        if let envNode = fields["env"] {
            for entry in reader.orderedEntries(envNode, "\(path).env") {
                guard let raw = reader.string(entry.value, "\(path).env.\(entry.key)") else {
                    envPairs = nil
                    continue
                }
                do throws(SecretReference.Failure) {
                    envPairs?.append((entry.key, try SecretReference.resolve(raw, environment: reader.expander.environment)))
                } catch {
                    reader.report(error.message, "\(path).env.\(entry.key)", entry.value)
                    envPairs = nil
                }
            }
        }
        let cwd = fields["cwd"].flatMap { reader.nonEmptyString($0, "\(path).cwd") }
        let maxSessions = fields["maxSessions"].map { reader.integer($0, "\(path).maxSessions", range: 1...100_000) } ?? ConfigurationDefaults.maxSessions
        let idle = fields["idleTimeout"].map { reader.duration($0, "\(path).idleTimeout") } ?? ConfigurationDefaults.idleTimeout
        let requestTimeout: Duration?? = fields["requestTimeout"].map { reader.duration($0, "\(path).requestTimeout") }
        let grace = fields["shutdownGrace"].map { reader.duration($0, "\(path).shutdownGrace") } ?? ConfigurationDefaults.shutdownGrace
        let start = fields["startTimeout"].map { reader.duration($0, "\(path).startTimeout") } ?? ConfigurationDefaults.startTimeout
        let spares = fields["spares"].map { reader.integer($0, "\(path).spares", range: 0...1000) } ?? 0
        let body = fields["maxRequestBodySize"].map { reader.byteSize($0, "\(path).maxRequestBodySize") } ?? ConfigurationDefaults.maxRequestBodyBytes
        guard let command, let args, let envPairs, let maxSessions, let idle, let grace, let start, let spares, let body else { return nil }
        if case .some(.none) = requestTimeout { return nil }
        if spares > maxSessions, let sparesNode = fields["spares"] {
            reader.report("spares (\(spares)) cannot exceed maxSessions (\(maxSessions)): spares count toward it", "\(path).spares", sparesNode)
            return nil
        }
        var passIdentity = false
        if let node = fields["passIdentity"], let text = reader.string(node, "\(path).passIdentity") {
            switch text {
            case "none": passIdentity = false
            case "env": passIdentity = true
            default:
                reader.report("passIdentity must be \"none\" (the default) or \"env\", got \"\(text)\"", "\(path).passIdentity", node)
                return nil
            }
            if passIdentity, spares > 0, let sparesNode = fields["spares"] {
                reader.report("spares cannot be used with passIdentity: env (a spare is started before anyone signs in)", "\(path).spares", sparesNode)
                return nil
            }
        }
        var service = StdioServiceConfiguration(
            name: name, command: command, args: args, env: Dictionary(envPairs, uniquingKeysWith: { _, last in last }), cwd: cwd,
            maxSessions: maxSessions, idleTimeout: idle, requestTimeout: requestTimeout ?? nil, shutdownGrace: grace,
            startTimeout: start, spares: spares, maxRequestBodyBytes: body
        )
        service.passIdentity = passIdentity
        service.maxSessionsPerUser = min(maxSessions, ConfigurationDefaults.maxSessionsPerUser)
        if let node = fields["maxSessionsPerUser"] {
            guard let value = reader.integer(node, "\(path).maxSessionsPerUser", range: 1...100_000) else { return nil }
            guard value <= maxSessions else {
                reader.report("maxSessionsPerUser (\(value)) cannot exceed maxSessions (\(maxSessions))", "\(path).maxSessionsPerUser", node)
                return nil
            }
            service.maxSessionsPerUser = value
        }
        if let node = fields["sseKeepAlive"], let value = reader.duration(node, "\(path).sseKeepAlive") {
            guard value >= .milliseconds(100) else {
                reader.report("sseKeepAlive must be at least 100ms", "\(path).sseKeepAlive", node)
                return nil
            }
            service.sseKeepAlive = value
        }
        if let node = fields["isolation"], let text = reader.string(node, "\(path).isolation") {
            guard let isolation = StdioServiceConfiguration.Isolation(rawValue: text) else {
                reader.report("isolation must be \"user\" (the default: a child never serves two identities) or \"shared\", got \"\(text)\"", "\(path).isolation", node)
                return nil
            }
            service.isolation = isolation
        }
        if let node = fields["pool"], let pool = reader.mapping(node, "\(path).pool", allowed: ["min", "max", "idleTimeout"]) {
            var settings = StdioServiceConfiguration.PoolSettings.default
            if let minNode = pool["min"], let value = reader.integer(minNode, "\(path).pool.min", range: 0...1000) { settings.min = value }
            if let maxNode = pool["max"], let value = reader.integer(maxNode, "\(path).pool.max", range: 1...1000) { settings.max = value }
            if let idleNode = pool["idleTimeout"], let value = reader.duration(idleNode, "\(path).pool.idleTimeout") { settings.idleTimeout = value }
            if settings.min > maxSessions {
                reader.report("pool.min (\(settings.min)) cannot exceed maxSessions (\(maxSessions)): pool children count toward it", "\(path).pool.min", node)
                return nil
            }
            if service.isolation == .shared, settings.min > settings.max {
                reader.report("pool.min (\(settings.min)) cannot exceed pool.max (\(settings.max)) with isolation: shared", "\(path).pool.min", node)
                return nil
            }
            if passIdentity, settings.min > 0 {
                reader.report("pool.min cannot be used with passIdentity: env (a warm child is started before anyone signs in)", "\(path).pool.min", node)
                return nil
            }
            service.pool = settings
        }
        return service
    }

    static let hopByHopHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length",
    ]

    static func isHeaderToken(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "!#$%&'*+-.^_`|~".unicodeScalars.contains(scalar))
        }
    }

    // MARK: middlewares

    struct MiddlewareTable {
        var byName: [String: MiddlewareConfiguration] = [:]
        /// Every defined name, valid or not, so routers naming a broken one are not also misreported.
        var names: [String] = []
        var failed = false
    }

    private func buildMiddlewares(_ node: Node?) -> MiddlewareTable? {
        var table = MiddlewareTable()
        guard let node else { return table }
        for entry in reader.orderedEntries(node, "middlewares") {
            let path = "middlewares.\(entry.key)"
            table.names.append(entry.key)
            guard let fields = reader.mapping(entry.value, path, allowed: ["rateLimit"]) else { table.failed = true; continue }
            guard let rateNode = fields["rateLimit"] else {
                reader.report("a middleware needs a kind: rateLimit", path, entry.value)
                table.failed = true
                continue
            }
            guard let limit = buildRateLimit(rateNode, "\(path).rateLimit") else { table.failed = true; continue }
            table.byName[entry.key] = .rateLimit(limit)
        }
        return table
    }

    private func buildRateLimit(_ node: Node, _ path: String) -> RateLimitConfiguration? {
        guard let fields = reader.mapping(node, path, allowed: ["average", "period", "burst", "by", "onStoreError", "tools"]) else { return nil }
        // Read on after a bad limit, so every mistake of the entry is reported at once.
        let limit = buildLimit(fields, node, path)
        var result = RateLimitConfiguration(limit: limit ?? .init(average: 1))
        var failed = limit == nil
        if let byNode = fields["by"], let text = reader.string(byNode, "\(path).by") {
            if let key = RateLimitConfiguration.Key(rawValue: text) { result.by = key } else {
                reader.report("by must be user, client or ip, got \"\(text)\"", "\(path).by", byNode)
                failed = true
            }
        }
        if let errorNode = fields["onStoreError"], let text = reader.string(errorNode, "\(path).onStoreError") {
            if let choice = RateLimitConfiguration.OnStoreError(rawValue: text) { result.onStoreError = choice } else {
                reader.report("onStoreError must be allow or deny, got \"\(text)\"", "\(path).onStoreError", errorNode)
                failed = true
            }
        }
        if let toolsNode = fields["tools"] {
            for entry in reader.orderedEntries(toolsNode, "\(path).tools") {
                let toolPath = "\(path).tools.\(entry.key)"
                guard let toolFields = reader.mapping(entry.value, toolPath, allowed: ["average", "period", "burst"]),
                      let toolLimit = buildLimit(toolFields, entry.value, toolPath)
                else { failed = true; continue }
                result.tools.append((pattern: entry.key, limit: toolLimit))
            }
        }
        return failed ? nil : result
    }

    private func buildLimit(_ fields: [String: Node], _ node: Node, _ path: String) -> RateLimitConfiguration.Limit? {
        guard let averageNode = fields["average"] else {
            reader.report("missing \"average\": requests allowed per period", path, node)
            return nil
        }
        guard let average = reader.integer(averageNode, "\(path).average", range: 1...1_000_000) else { return nil }
        var period = Duration.seconds(1)
        if let periodNode = fields["period"] {
            guard let value = reader.duration(periodNode, "\(path).period") else { return nil }
            guard value >= .milliseconds(1) else {
                reader.report("period must be at least 1ms", "\(path).period", periodNode)
                return nil
            }
            period = value
        }
        var burst = average
        if let burstNode = fields["burst"] {
            guard let value = reader.integer(burstNode, "\(path).burst", range: 1...1_000_000) else { return nil }
            burst = value
        }
        return RateLimitConfiguration.Limit(average: average, period: period, burst: burst)
    }

    // MARK: routers

    private func buildRouters(_ node: Node?, root: Node, services: ServiceTable?, entryPoints: [EntryPoint]?, middlewares: MiddlewareTable?) -> [RouterConfiguration]? {
        guard let node else {
            reader.report("missing \"routers\": define at least one router, e.g. routers: { time: { rule: \"PathPrefix(`/time`)\", service: time } }", "", root)
            return nil
        }
        var routers: [RouterConfiguration] = []
        var failed = false
        var endpoints: [String: String] = [:]
        for entry in reader.orderedEntries(node, "routers") {
            let path = "routers.\(entry.key)"
            let allowed = ["rule", "service", "priority", "auth", "allow", "entryPoints", "mcpPath", "identityHeaders", "middlewares", "tools", "resources", "prompts", "policies", "legacySSE"]
            guard let fields = reader.mapping(entry.value, path, allowed: allowed) else { failed = true; continue }

            var rule: Rule?
            var ruleText = ""
            if let ruleNode = fields["rule"] {
                if let text = reader.string(ruleNode, "\(path).rule") {
                    ruleText = text
                    do {
                        rule = try Rule(parsing: text)
                    } catch {
                        let position = reader.position(ruleNode)
                        reader.collector.report(
                            "invalid rule: \(error.message)", keyPath: "\(path).rule",
                            at: SourcePosition(line: position.line, column: reader.contentColumn(ruleNode) + error.offset)
                        )
                    }
                }
            } else {
                reader.report("missing \"rule\", e.g. \"PathPrefix(`/time`)\" or \"Host(`mcp.example.com`)\"", path, entry.value)
            }

            var serviceName: String?
            if let serviceNode = fields["service"] {
                if let name = reader.nonEmptyString(serviceNode, "\(path).service") {
                    if let services, !services.names.contains(name) {
                        let known = Set(services.names.map(ConfigurationLoader.displayName)).sorted().joined(separator: ", ")
                        reader.report("service \"\(name)\" is not defined (defined: \(known.isEmpty ? "none" : known))", "\(path).service", serviceNode)
                    } else {
                        serviceName = name
                    }
                }
            } else {
                reader.report("missing \"service\": the name of a service under services", path, entry.value)
            }

            let priority = fields["priority"].map { reader.integer($0, "\(path).priority", range: 0...Int(Int32.max)) } ?? ruleText.count
            var auth = RouterAuth.oauth
            var authMethods: Set<AuthMethod> = [.oauth]
            if let authNode = fields["auth"] {
                // One kind, or a list of kinds of which any one suffices.
                let names: [String]? = if case .sequence = authNode { reader.stringList(authNode, "\(path).auth") } else { reader.string(authNode, "\(path).auth").map { [$0] } }
                if let names {
                    var methods: Set<AuthMethod> = []
                    for name in names {
                        if name == "none" {
                            if names.count > 1 {
                                reader.report("auth: none cannot be combined with other kinds", "\(path).auth", authNode)
                                failed = true
                            }
                            auth = .none
                        } else if let method = AuthMethod(rawValue: name) {
                            methods.insert(method)
                        } else {
                            reader.report("auth must be oauth (the default), apiKey, jwt, none, or a list such as [oauth, apiKey]; got \"\(name)\"", "\(path).auth", authNode)
                            failed = true
                        }
                    }
                    if names.isEmpty {
                        reader.report("auth needs at least one kind: oauth, apiKey, jwt or none", "\(path).auth", authNode)
                        failed = true
                    }
                    if !methods.isEmpty { authMethods = methods }
                } else {
                    failed = true
                }
            }
            let allow = fields["allow"].flatMap { buildAllowList($0, "\(path).allow") }
            var routerEntryPoints: [String] = []
            if let epNode = fields["entryPoints"], let names = reader.stringList(epNode, "\(path).entryPoints") {
                for name in names where !(entryPoints?.contains { $0.name == name } ?? true) {
                    reader.report("entry point \"\(name)\" is not defined", "\(path).entryPoints", epNode)
                    failed = true
                }
                routerEntryPoints = names
            }
            var mcpPath = rule?.mcpEndpointPath ?? "/mcp"
            if let mcpNode = fields["mcpPath"], let text = reader.string(mcpNode, "\(path).mcpPath") {
                if text.hasPrefix("/"), !text.contains("?"), !text.contains("#") { mcpPath = text } else {
                    reader.report("mcpPath must be a path starting with \"/\"", "\(path).mcpPath", mcpNode)
                    failed = true
                }
            }
            var identityHeaders = IdentityHeaderNames.default
            if let node = fields["identityHeaders"], let names = reader.mapping(node, "\(path).identityHeaders", allowed: ["user", "email", "clientID"]) {
                for (key, valueNode) in names {
                    guard let name = reader.string(valueNode, "\(path).identityHeaders.\(key)") else { failed = true; continue }
                    guard Self.isHeaderToken(name), !Self.hopByHopHeaders.contains(name.lowercased()), name.lowercased() != "authorization" else {
                        reader.report("\"\(name)\" cannot be an identity header name", "\(path).identityHeaders.\(key)", valueNode)
                        failed = true
                        continue
                    }
                    switch key {
                    case "user": identityHeaders.user = name
                    case "email": identityHeaders.email = name
                    default: identityHeaders.clientID = name
                    }
                }
            }
            var routerMiddlewares: [String] = []
            if let node = fields["middlewares"], let names = reader.stringList(node, "\(path).middlewares") {
                let items: [Node] = if case .sequence(let sequence) = node { Array(sequence) } else { [] }
                for (index, name) in names.enumerated() where !(middlewares?.names.contains(name) ?? true) {
                    let known = Set((middlewares?.names ?? []).map(ConfigurationLoader.displayName)).sorted().joined(separator: ", ")
                    // At the name itself, not the list.
                    reader.report("middleware \"\(name)\" is not defined (defined: \(known.isEmpty ? "none" : known))", "\(path).middlewares", index < items.count ? items[index] : node)
                    failed = true
                }
                routerMiddlewares = names
            }
            let callPolicy = buildCallPolicy(fields, path)
            guard let rule, let serviceName, let priority, let callPolicy else { failed = true; continue }
            let endpointKey = "\(rule.requiredMatchers.compactMap { if case .host(let h) = $0 { h } else { nil } }.first ?? "*")\(mcpPath)"
            if let other = endpoints[endpointKey], let ruleNode = fields["rule"] {
                reader.report("router \"\(other)\" already serves the MCP endpoint \(mcpPath) for the same host; give this router another path or host", "\(path).rule", ruleNode)
                failed = true
            }
            endpoints[endpointKey] = entry.key
            var router = RouterConfiguration(
                name: entry.key, ruleText: ruleText, rule: rule, priority: priority, service: serviceName,
                auth: auth, allow: allow, entryPoints: routerEntryPoints, mcpPath: mcpPath, identityHeaders: identityHeaders,
                middlewares: routerMiddlewares, callPolicy: callPolicy, authMethods: authMethods
            )
            if let node = fields["legacySSE"], let enabled = reader.boolean(node, "\(path).legacySSE") { router.legacySSE = enabled }
            routers.append(router)
        }
        return failed ? nil : routers
    }

    // MARK: call policies

    /// `tools` / `resources` / `prompts` and `policies` of a router; nil when any part is wrong
    /// (every problem reported).
    private func buildCallPolicy(_ fields: [String: Node], _ path: String) -> CallPolicy? {
        var policy = CallPolicy()
        var failed = false
        for kind in CallPolicy.Kind.allCases {
            guard let node = fields[kind.rawValue] else { continue }
            if let rules = buildCallRules(node, "\(path).\(kind.rawValue)") { policy.rules[kind] = rules } else { failed = true }
        }
        if let node = fields["policies"] {
            guard case .sequence(let entries) = node else {
                reader.report("expected a list of policies, e.g. [{teams: [\"acme/sre\"], allow: [\"*\"]}]", "\(path).policies", node)
                return nil
            }
            for (index, entry) in entries.enumerated() {
                let entryPath = "\(path).policies[\(index)]"
                let allowed = ["users", "orgs", "teams", "groups", "allow", "deny"] + CallPolicy.Kind.allCases.map(\.rawValue)
                guard let entryFields = reader.mapping(entry, entryPath, allowed: allowed) else { failed = true; continue }
                let identities = allowList(entryFields, entryPath)
                if identities.users.isEmpty, identities.orgs.isEmpty, identities.teams.isEmpty, identities.groups.isEmpty {
                    reader.report("a policy names whom it applies to: users, orgs, teams or groups (rules for everyone go on the router's own tools, resources and prompts)", entryPath, entry)
                    failed = true
                    continue
                }
                var identityPolicy = CallPolicy.IdentityPolicy(users: identities.users, orgs: identities.orgs, teams: identities.teams, groups: identities.groups)
                // `allow` / `deny` at the top of an entry are about tools, as in the router's `tools`.
                if entryFields["allow"] != nil || entryFields["deny"] != nil {
                    if entryFields["tools"] != nil {
                        reader.report("write a policy's tool rules either as allow/deny or under tools, not both", entryPath, entry)
                        failed = true
                    } else if let rules = callRules(entryFields, entryPath) {
                        identityPolicy.rules[.tools] = rules
                    } else { failed = true }
                }
                for kind in CallPolicy.Kind.allCases {
                    guard let node = entryFields[kind.rawValue] else { continue }
                    if let rules = buildCallRules(node, "\(entryPath).\(kind.rawValue)") { identityPolicy.rules[kind] = rules } else { failed = true }
                }
                if identityPolicy.rules.isEmpty {
                    reader.report("a policy needs allow or deny (or tools, resources, prompts)", entryPath, entry)
                    failed = true
                    continue
                }
                policy.policies.append(identityPolicy)
            }
        }
        return failed ? nil : policy
    }

    private func buildCallRules(_ node: Node, _ path: String) -> CallPolicy.Rules? {
        guard let fields = reader.mapping(node, path, allowed: ["allow", "deny"]) else { return nil }
        return callRules(fields, path)
    }

    private func callRules(_ fields: [String: Node], _ path: String) -> CallPolicy.Rules? {
        var rules = CallPolicy.Rules()
        var failed = false
        for key in ["allow", "deny"] {
            guard let listNode = fields[key] else { continue }
            guard let patterns = reader.stringList(listNode, "\(path).\(key)") else { failed = true; continue }
            let items: [Node] = if case .sequence(let sequence) = listNode { Array(sequence) } else { [] }
            for (index, pattern) in patterns.enumerated() where pattern.isEmpty {
                reader.report("an empty pattern names nothing; \"*\" names everything", "\(path).\(key)[\(index)]", index < items.count ? items[index] : listNode)
                failed = true
            }
            if key == "allow" { rules.allow = patterns } else { rules.deny = patterns }
        }
        return failed ? nil : rules
    }

    private func buildAudit(_ node: Node) -> AuditConfiguration? {
        guard let fields = reader.mapping(node, "audit", allowed: ["file", "arguments", "redactKeys"]) else { return nil }
        guard let fileNode = fields["file"] else {
            reader.report("missing \"file\": a path, or \"-\" for standard output", "audit", node)
            return nil
        }
        guard let file = reader.nonEmptyString(fileNode, "audit.file") else { return nil }
        var result = AuditConfiguration(file: file)
        var failed = false
        if let argumentsNode = fields["arguments"], let text = reader.string(argumentsNode, "audit.arguments") {
            if let mode = AuditConfiguration.Arguments(rawValue: text) { result.arguments = mode } else {
                reader.report("arguments must be none, redacted or full, got \"\(text)\"", "audit.arguments", argumentsNode)
                failed = true
            }
        }
        if let keysNode = fields["redactKeys"] {
            if let keys = reader.stringList(keysNode, "audit.redactKeys") { result.redactKeys = keys } else { failed = true }
        }
        return failed ? nil : result
    }

    /// The names a mapping defines, read quietly (its own section reports what is wrong with it).
    static func names(in node: Node?) -> [String] {
        guard case .mapping(let mapping)? = node else { return [] }
        return mapping.compactMap { $0.key.scalar?.string }
    }

    private func buildMetrics(_ node: Node, entryPointNames: [String]) -> MetricsConfiguration? {
        guard let fields = reader.mapping(node, "metrics", allowed: ["prometheus"]) else { return nil }
        guard let prometheusNode = fields["prometheus"] else {
            reader.report("missing \"prometheus\": e.g. metrics: { prometheus: { entryPoint: metrics } }", "metrics", node)
            return nil
        }
        var result = MetricsConfiguration()
        // `prometheus: {}` (or a bare `prometheus:`) takes every default.
        guard let prometheus = reader.mapping(prometheusNode, "metrics.prometheus", allowed: ["path", "entryPoint", "allowFrom"]) else { return nil }
        var failed = false
        if let pathNode = prometheus["path"], let path = reader.string(pathNode, "metrics.prometheus.path") {
            if path.hasPrefix("/"), !path.contains("?"), !path.contains("#"), !path.contains("..") { result.path = path } else {
                reader.report("path must start with / and have no query, fragment or \"..\", got \"\(path)\"", "metrics.prometheus.path", pathNode)
                failed = true
            }
        }
        if let entryNode = prometheus["entryPoint"], let name = reader.string(entryNode, "metrics.prometheus.entryPoint") {
            if !entryPointNames.contains(name) {
                let defined = entryPointNames.joined(separator: ", ")
                reader.report("unknown entry point \"\(name)\" (defined: \(defined))", "metrics.prometheus.entryPoint", entryNode)
                failed = true
            }
            result.entryPoint = name
        }
        if let allowNode = prometheus["allowFrom"] {
            if let list = reader.stringList(allowNode, "metrics.prometheus.allowFrom") {
                var ranges: [AddressRange] = []
                for (index, text) in list.enumerated() {
                    if let range = AddressRange(text) { ranges.append(range) } else {
                        let element = allowNode.sequence.map { Array($0) }?[index] ?? allowNode
                        reader.report("\"\(text)\" is not an address or CIDR range (e.g. 10.0.0.0/8, 127.0.0.1, fd00::/8)", "metrics.prometheus.allowFrom[\(index)]", element)
                        failed = true
                    }
                }
                result.allowFrom = ranges
            } else {
                failed = true
            }
        }
        return failed ? nil : result
    }

    private func buildAdmin(_ node: Node) -> AdminConfiguration? {
        guard let fields = reader.mapping(node, "admin", allowed: ["allow"]) else { return nil }
        guard let allowNode = fields["allow"] else {
            reader.report("missing \"allow\": who may use /admin, e.g. admin: { allow: { users: [alice] } }", "admin", node)
            return nil
        }
        guard let allow = buildAllowList(allowNode, "admin.allow") else { return nil }
        if allow.anyone {
            reader.report("the admin page cannot be open to anyone: list users, orgs or teams", "admin.allow.anyone", allowNode)
            return nil
        }
        return AdminConfiguration(allow: allow)
    }

    /// `cluster:`: several instances on one store. Needs `store.redis` (instances share nothing else).
    private func buildCluster(_ node: Node, store: StoreConfiguration?, storeNode: Node?) -> ClusterConfiguration? {
        guard let fields = reader.mapping(node, "cluster", allowed: ["advertiseURL", "secret", "heartbeatTimeout"]) else { return nil }
        var failed = false
        if store == nil {
            reader.report("cluster needs store.redis: the instances share their sessions through it", "cluster", node)
            failed = true
        }
        guard let urlNode = fields["advertiseURL"] else {
            reader.report("missing \"advertiseURL\": how the other instances reach this one, e.g. \"http://10.0.0.5:8080\"", "cluster", node)
            return nil
        }
        guard let secretNode = fields["secret"] else {
            reader.report("missing \"secret\": the key that signs requests between instances, e.g. secret: \"env://MCPGW_CLUSTER_SECRET\" (32 characters or more)", "cluster", node)
            return nil
        }
        let url = httpURL(urlNode, "cluster.advertiseURL")
        let secret = secret(secretNode, "cluster.secret")
        if let secret, secret.utf8.count < 32 {
            reader.report("the cluster secret must be at least 32 characters (e.g. openssl rand -base64 32)", "cluster.secret", secretNode)
            failed = true
        }
        var result = ClusterConfiguration(advertiseURL: url ?? "", secret: secret ?? "")
        if let timeoutNode = fields["heartbeatTimeout"] {
            if let timeout = reader.duration(timeoutNode, "cluster.heartbeatTimeout") {
                if timeout < .seconds(3) {
                    reader.report("heartbeatTimeout must be at least 3s", "cluster.heartbeatTimeout", timeoutNode)
                    failed = true
                }
                result.heartbeatTimeout = timeout
            } else {
                failed = true
            }
        }
        return failed || url == nil || secret == nil ? nil : result
    }

    private func buildTracing(_ node: Node) -> TracingConfiguration? {
        guard let fields = reader.mapping(node, "tracing", allowed: ["otlp", "serviceName", "sampleRatio"]) else { return nil }
        guard let otlpNode = fields["otlp"], let otlp = reader.mapping(otlpNode, "tracing.otlp", allowed: ["endpoint"]), let endpointNode = otlp["endpoint"] else {
            reader.report("missing \"otlp.endpoint\": the OTLP/HTTP collector, e.g. tracing: { otlp: { endpoint: \"http://127.0.0.1:4318\" } }", "tracing", node)
            return nil
        }
        let endpoint = httpURL(endpointNode, "tracing.otlp.endpoint")
        var result = TracingConfiguration(endpoint: endpoint ?? "")
        var failed = endpoint == nil
        if let nameNode = fields["serviceName"] {
            if let name = reader.nonEmptyString(nameNode, "tracing.serviceName") { result.serviceName = name } else { failed = true }
        }
        if let ratioNode = fields["sampleRatio"] {
            if let ratio = Double(ratioNode.scalar?.string ?? ""), (0...1).contains(ratio) { result.sampleRatio = ratio } else {
                reader.report("sampleRatio must be a number from 0 to 1", "tracing.sampleRatio", ratioNode)
                failed = true
            }
        }
        return failed ? nil : result
    }

    private func buildLimits(_ node: Node) -> SessionLimits? {
        guard let fields = reader.mapping(node, "limits", allowed: ["connections", "webSocketSessions", "legacySSESessions"]) else { return nil }
        var result = SessionLimits.default
        var failed = false
        if let value = fields["webSocketSessions"] {
            if let count = reader.integer(value, "limits.webSocketSessions", range: 1...SessionLimits.ceiling) { result.webSocketSessions = count } else { failed = true }
        }
        if let value = fields["connections"] {
            if let count = reader.integer(value, "limits.connections", range: 1...SessionLimits.ceiling) { result.connections = count } else { failed = true }
        }
        if let value = fields["legacySSESessions"] {
            if let count = reader.integer(value, "limits.legacySSESessions", range: 1...SessionLimits.ceiling) { result.legacySSESessions = count } else { failed = true }
        }
        return failed ? nil : result
    }

    private func buildLog(_ node: Node) -> LogConfiguration? {
        guard let fields = reader.mapping(node, "log", allowed: ["level", "format", "accessLog"]) else { return nil }
        var result = LogConfiguration.default
        var failed = false
        if let levelNode = fields["level"], let level = reader.string(levelNode, "log.level") {
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            if levels.contains(level) { result.level = level } else {
                reader.report("log level must be one of \(levels.joined(separator: ", "))", "log.level", levelNode)
                failed = true
            }
        }
        if let formatNode = fields["format"], let text = reader.string(formatNode, "log.format") {
            if let format = LogConfiguration.Format(rawValue: text) { result.format = format } else {
                reader.report("log format must be text or json, got \"\(text)\"", "log.format", formatNode)
                failed = true
            }
        }
        if let accessNode = fields["accessLog"] {
            if let value = reader.boolean(accessNode, "log.accessLog") { result.accessLog = value } else { failed = true }
        }
        return failed ? nil : result
    }
}
