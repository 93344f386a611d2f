import AuthorizationServer
import Foundation
import GatewayAudit
import GatewayConfig
import GatewayConnections
import GatewayUpstream
import Hummingbird
import Logging
import MCPMessages
import MCPTransport
import MCPTranslation
import NIOCore

/// Users' connections to OAuth-protected upstreams (`services.<s>.http.oauth`) on the request
/// path: the calling user's token for the upstream, refreshed before it expires and once more on
/// an upstream 401; without a usable connection, the answer that sends the user to connect.
final class UpstreamConnections: Sendable {
    let vault: ConnectionVault
    let client: UpstreamOAuthClient
    let holder: ConfigurationHolder
    let logger: Logger
    let audit: (any AuditSink)?

    /// The id of the gateway's own ask (its `inputRequests` key) and the `requestState` it sets.
    static let inputKey = "mcpgw-connect"
    /// How long a grant read for one request serves the next ones of this process: a disconnect or
    /// a refresh on another instance shows within this time (and an upstream that refuses the old
    /// token makes the gateway read the store at once).
    static let recentGrantAge: Duration = .seconds(5)
    /// How long a retry after the user accepted to connect waits for the connection to exist.
    static let connectWait: Duration = .seconds(120)

    init(vault: ConnectionVault, client: UpstreamOAuthClient, holder: ConfigurationHolder, logger: Logger, audit: (any AuditSink)?) {
        self.vault = vault
        self.client = client
        self.holder = holder
        self.logger = logger
        self.audit = audit
    }

    var publicURL: PublicURL { holder.current.configuration.publicURL }

    func connectURL(_ service: String) -> String { publicURL.origin + "/connect/" + service }

    /// The user's credentials for `service`, nil when they have no connection to it.
    func authorization(subject: String, service: HTTPServiceConfiguration) async throws(GatewayError) -> UpstreamAuthorization? {
        let grant: UpstreamGrant?
        do { grant = try await vault.grant(subject: subject, service: service.name, maxAge: Self.recentGrantAge) } catch {
            switch error {
            case .store(let detail):
                logger.warning("the store cannot be read for an upstream connection", metadata: ["detail": "\(detail)"])
                throw .storeUnavailable
            case .sealing(let detail):
                // A record no configured key opens is as good as none: the user connects again.
                logger.error("a stored upstream connection cannot be opened", metadata: ["service": "\(service.name)", "detail": "\(detail)"])
                return nil
            }
        }
        guard let grant else { return nil }
        let (vault, client, holder, logger, audit) = (self.vault, self.client, self.holder, self.logger, self.audit)
        let name = service.name
        let refresh: @Sendable (String) async -> String? = { stale in
            let settings = Self.settings(of: name, in: holder)
            // Called once per refresh, whoever else waits for it: the events are recorded there.
            let refreshed = await vault.refreshed(subject: subject, service: name, stale: stale) { current in
                var outcome = ConnectionVault.RefreshOutcome.refused
                if let settings, settings.provider == .mcp {
                    let secret = await client.clientSecret(for: current, settings: settings, publicURL: holder.current.configuration.publicURL)
                    outcome = await client.refresh(current, clientSecret: secret)
                }
                switch outcome {
                case .refreshed:
                    audit?.record(AuditEvent("connection.refreshed", [("service", .string(name)), ("subject", .string(subject))]))
                case .refused:
                    logger.notice("upstream connection ended: its refresh was refused", metadata: ["service": "\(name)"])
                    audit?.record(AuditEvent("connection.ended", [("service", .string(name)), ("subject", .string(subject)), ("reason", .string("refresh_refused"))]))
                case .unavailable:
                    break
                }
                return outcome
            }
            return refreshed?.accessToken
        }
        return UpstreamAuthorization(
            token: {
                guard grant.wantsRefresh() else { return grant.accessToken }
                return await refresh(grant.accessToken)
            },
            refreshed: refresh,
            disconnect: {
                _ = try? await vault.remove(subject: subject, service: name)
                logger.notice("upstream connection ended: the upstream refused a fresh token", metadata: ["service": "\(name)"])
                audit?.record(AuditEvent("connection.ended", [("service", .string(name)), ("subject", .string(subject)), ("reason", .string("token_refused"))]))
            }
        )
    }

    /// Services with `oauth.provider: github`.
    func githubServices() -> [UpstreamOAuthSettings] {
        holder.current.configuration.services.values.compactMap { service in
            guard case .http(let http) = service, let oauth = http.oauth, oauth.provider == .github else { return nil }
            return oauth
        }
    }

    /// The user's GitHub token from a sign-in, kept (sealed) for every `provider: github` service.
    func keepGitHubToken(_ token: String, for user: GrantSubject) async {
        for (name, service) in holder.current.configuration.services {
            guard case .http(let http) = service, let oauth = http.oauth, oauth.provider == .github else { continue }
            var grant = UpstreamGrant(accessToken: token, scope: oauth.scopes.joined(separator: " "))
            grant.login = user.login
            do {
                try await vault.save(grant, subject: user.subject, service: name)
                audit?.record(AuditEvent("connection.created", [("service", .string(name)), ("user", .string(user.login)), ("subject", .string(user.subject))]))
            } catch {
                logger.warning("the GitHub token could not be kept for a service", metadata: ["service": "\(name)", "detail": "\(error)"])
            }
        }
    }

    static func settings(of service: String, in holder: ConfigurationHolder) -> UpstreamOAuthSettings? {
        guard case .http(let http) = holder.current.configuration.services[service] else { return nil }
        return http.oauth
    }

    /// Whether `call` is a retry answering the gateway's own connect ask, and how the user answered.
    static func connectAnswer(_ call: MCPCall) -> String? {
        guard let message = call.message else { return nil }
        if let action = message.string(at: ["params", "inputResponses", inputKey, "action"]) { return action }
        if message.value(at: ["params", "inputResponses", inputKey]) != nil { return "accept" }
        if message.string(at: ["params", "requestState"])?.hasPrefix(inputKey + ":") == true { return "unknown" }
        return nil
    }

    /// `call` without the gateway's own ask's answer (the upstream never asked for it).
    static func withoutConnectAnswer(_ call: MCPCall) -> MCPCall {
        guard let message = call.message, connectAnswer(call) != nil,
              let edited = message.editing("params", { params in
                  if var responses = params["inputResponses"] as? [String: Any] {
                      responses[inputKey] = nil
                      params["inputResponses"] = responses.isEmpty ? nil : responses
                  }
                  if (params["requestState"] as? String)?.hasPrefix(inputKey + ":") == true { params["requestState"] = nil }
              })
        else { return call }
        return MCPCall(protocolVersion: call.protocolVersion, sessionID: call.sessionID, body: edited.bytes)
    }

    /// After the user accepted to connect: the connection, once it exists (within `connectWait`).
    func awaitConnection(subject: String, service: HTTPServiceConfiguration) async throws(GatewayError) -> UpstreamAuthorization? {
        let deadline = ContinuousClock.now + Self.connectWait
        while true {
            if let authorization = try await authorization(subject: subject, service: service) { return authorization }
            guard ContinuousClock.now < deadline else { return nil }
            // The connection is made in a browser, possibly through another instance: the store is
            // where it shows up.
            do { try await Task.sleep(for: .milliseconds(500)) } catch { return nil }
        }
    }

    /// The answer to a request of a user not connected to `service`: for a client that takes URL
    /// elicitation, the gateway's own ask to open the connect page (2026-07-28 `input_required`;
    /// a session-based client behind the gateway's session gets it as `elicitation/create` on the
    /// request's stream, and the gateway retries the request itself); otherwise a JSON-RPC error
    /// whose message gives the page's URL.
    func connectRequired(_ call: MCPCall, service: String, sessionBased: Bool, retried: Bool) -> Response {
        guard let message = call.message, message.isRequest else { return Response(status: .accepted) }
        let url = connectURL(service)
        let text = "Connect your \(service) account to use it through this gateway: open \(url), sign in, then try again."
        let capabilities = message.value(at: ["params", "_meta", ModernProtocol.metaPrefix + "clientCapabilities"])
            .flatMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        let takesURL = (capabilities?["elicitation"] as? [String: Any])?["url"] != nil
        if takesURL, !retried {
            var params: [String: Any] = ["mode": "url", "message": "Connect your \(service) account to continue.", "url": url]
            // 2025-11-25 (a session-based client) requires an id; 2026-07-28 has none.
            if sessionBased { params["elicitationId"] = "\(Self.inputKey)-\(service)-\(UInt64.random(in: 1...UInt64.max))" }
            let result: [String: Any] = [
                "resultType": "input_required",
                "inputRequests": [Self.inputKey: ["method": "elicitation/create", "params": params]],
                "requestState": "\(Self.inputKey):\(service)",
            ]
            return MCPResponses.jsonResponse(GroupServer.response(rawID: message.rawID, result: result), headers: [:])
        }
        let data = #"{"reason":"upstream_connection_required","service":\#(JSONRPCErrorResponse.jsonString(service)),"url":\#(JSONRPCErrorResponse.jsonString(url))}"#
        return MCPResponses.jsonResponse(
            JSONRPCErrorResponse.make(rawID: message.rawID, code: Self.connectionRequiredCode, message: text, dataJSON: data), headers: [:]
        )
    }

    /// An implementation-defined code (the -32000…-32019 range the specification leaves to them).
    static let connectionRequiredCode = -32010
}
