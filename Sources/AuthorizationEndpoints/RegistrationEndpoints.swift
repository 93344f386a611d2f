package import GatewayAudit
import GatewayAuth
import NIOFoundationEssentialsCompat
import GatewayStore
package import AuthorizationServer
import Foundation
package import GatewayConfig
package import HTTPTypes
package import Hummingbird
import NIOCore

/// `POST /register` (RFC 7591) and `GET/PUT/DELETE /register/{client_id}` (RFC 7592).
package struct RegistrationEndpoints: Sendable {
    package let registry: ClientRegistry
    package let refreshTokens: RefreshTokens
    package let accessTokens: AccessTokens
    package let publicURL: PublicURL
    /// Client registrations, updates and deletions; nil: not recorded.
    package var audit: (any AuditSink)?

    package init(registry: ClientRegistry, refreshTokens: RefreshTokens, accessTokens: AccessTokens, publicURL: PublicURL) {
        self.registry = registry
        self.refreshTokens = refreshTokens
        self.accessTokens = accessTokens
        self.publicURL = publicURL
    }
    package static let maxBodyBytes = 64 * 1024
    package static let pragma = HTTPField.Name("Pragma")!

    /// Answers when the path is a registration path; nil otherwise.
    package func respond(to request: Request, context: some AuthorizationRequestContext) async -> Response? {
        let path = request.uri.path
        if path == "/register" {
            guard request.method == .post else { return Self.methodNotAllowed("POST") }
            return await register(request, context: context)
        }
        guard path.hasPrefix("/register/") else { return nil }
        let clientID = String(path.dropFirst("/register/".count))
        guard !clientID.isEmpty, !clientID.contains("/") else { return nil }
        switch request.method {
        case .get, .put, .delete: return await manage(request, clientID: clientID)
        default: return Self.methodNotAllowed("GET, PUT, DELETE")
        }
    }

    private func register(_ request: Request, context: some AuthorizationRequestContext) async -> Response {
        var request = request
        guard let body = await Self.jsonObject(&request) else {
            return Self.oauthError(.badRequest, "invalid_client_metadata", "the body must be a JSON object")
        }
        do {
            let issued = try await registry.register(body, clientKey: ClientAddress.limitKey(context.clientIP))
            var response = issued.record.responseBody(registrationClientURI: clientURI(issued.record.clientID))
            response["registration_access_token"] = issued.registrationAccessToken
            if let secret = issued.clientSecret { response["client_secret"] = secret }
            audit?.record(AuditEvent("client.registered", [
                ("client_id", .string(issued.record.clientID)), ("client_name", issued.record.metadata.client_name.map(AuditEvent.Value.string)),
                ("ip", context.clientIP.map(AuditEvent.Value.string)),
            ]))
            return Self.json(.created, response)
        } catch {
            return Self.response(for: error)
        }
    }

    private func manage(_ request: Request, clientID: String) async -> Response {
        var request = request
        guard let token = BearerToken.from(request.headers) else {
            return Self.oauthError(.unauthorized, "invalid_token", "a registration access token is required", challenge: true)
        }
        do throws(RegistryError) {
            let record = try await registry.authorize(clientID: clientID, registrationToken: token)
            switch request.method {
            case .get:
                return Self.json(.ok, record.responseBody(registrationClientURI: clientURI(clientID)))
            case .put:
                guard let body = await Self.jsonObject(&request) else {
                    return Self.oauthError(.badRequest, "invalid_client_metadata", "the body must be a JSON object")
                }
                let (updated, newSecret) = try await registry.update(record, with: body)
                var response = updated.responseBody(registrationClientURI: clientURI(clientID))
                if let newSecret { response["client_secret"] = newSecret }
                audit?.record(AuditEvent("client.updated", [("client_id", .string(clientID))]))
                return Self.json(.ok, response)
            default:
                // Every token issued to the client dies with it.
                do {
                    try await refreshTokens.revokeAll(clientID: clientID)
                    try await accessTokens.revokeAll(clientID: clientID)
                } catch {
                    throw RegistryError.storeUnavailable(error.description)
                }
                try await registry.delete(record)
                audit?.record(AuditEvent("client.deleted", [("client_id", .string(clientID))]))
                return Response(status: .noContent, headers: [.cacheControl: "no-store"])
            }
        } catch {
            return Self.response(for: error)
        }
    }

    private func clientURI(_ clientID: String) -> String { "\(publicURL.origin)/register/\(clientID)" }

    // MARK: helpers

    package static func response(for error: RegistryError) -> Response {
        switch error {
        case .invalid(let registration):
            return oauthError(.badRequest, registration.code, registration.description)
        case .unauthorized:
            return oauthError(.unauthorized, "invalid_token", "the registration access token is not valid for this client", challenge: true)
        case .rateLimited(let seconds):
            var response = oauthError(.tooManyRequests, "rate_limited", "too many registrations from this address; retry later")
            response.headers[.retryAfter] = String(seconds)
            return response
        case .storeUnavailable:
            return oauthError(.serviceUnavailable, "temporarily_unavailable", "the gateway's state store is unavailable; retry shortly")
        }
    }

    package static func jsonObject(_ request: inout Request) async -> [String: Any]? {
        guard let buffer = try? await request.collectBody(upTo: maxBodyBytes) else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(buffer: buffer))) as? [String: Any]
    }

    package static func json(_ status: HTTPResponse.Status, _ object: [String: Any]) -> Response {
        JSONResponse.make(status: status, object: object, headers: [.contentType: "application/json", .cacheControl: "no-store", Self.pragma: "no-cache"])
    }

    package static func oauthError(_ status: HTTPResponse.Status, _ code: String, _ description: String, challenge: Bool = false) -> Response {
        OAuthRefusal(status: status, code: code, description: description, challenge: challenge ? "Bearer error=\"\(code)\"" : nil).response
    }

    package static func methodNotAllowed(_ allow: String) -> Response {
        var response = oauthError(.methodNotAllowed, "invalid_request", "method not allowed")
        response.headers[.allow] = allow
        return response
    }
}
