import NIOFoundationEssentialsCompat
package import AsyncHTTPClient
import Foundation
package import GatewayConfig
package import NIOCore
import NIOHTTP1

package struct GitHubError: Error, CustomStringConvertible {
    package var description: String
}

/// GitHub's OAuth web flow and the few REST reads sign-in needs, against github.com or a GitHub
/// Enterprise install (`webURL`, `apiURL`). GitHub's token lives only for the duration of one
/// sign-in: it is never stored and never logged.
package struct GitHubClient: Sendable {
    package let configuration: GitHubConfiguration
    package let http: HTTPClient
    package static let timeout: TimeAmount = .seconds(10)
    package static let maxBody = 1024 * 1024

    package init(configuration: GitHubConfiguration, http: HTTPClient) {
        self.configuration = configuration
        self.http = http
    }

    /// `extraScopes`: what services with `oauth.provider: github` need of the user's token.
    package func authorizeURL(state: String, callbackURL: String, needsOrgs: Bool, extraScopes: [String] = []) -> String {
        // Org and team membership are readable only with read:org.
        var scopes = needsOrgs ? ["read:org"] : []
        for scope in extraScopes where !scopes.contains(scope) { scopes.append(scope) }
        let pairs: [(String, String?)] = [
            ("client_id", configuration.clientID), ("redirect_uri", callbackURL), ("state", state),
            ("scope", scopes.joined(separator: " ")), ("allow_signup", "false"),
        ]
        return FormEncoding.appending(pairs, to: configuration.webURL + "/login/oauth/authorize")
    }

    /// Exchanges the callback's code for a GitHub token. GitHub reports failures with status 200
    /// and an `error` field, so the body decides, not the status.
    package func exchange(code: String, callbackURL: String) async throws(GitHubError) -> String {
        var request = HTTPClientRequest(url: configuration.webURL + "/login/oauth/access_token")
        request.method = .POST
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "User-Agent", value: "mcp-gateway")
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode([
            ("client_id", configuration.clientID), ("client_secret", configuration.clientSecret), ("code", code), ("redirect_uri", callbackURL),
        ])))
        let json = try await send(request, what: "token exchange")
        if let error = json["error"] as? String {
            let description = json["error_description"] as? String ?? error
            throw GitHubError(description: "GitHub refused the sign-in: \(description) (\(error))")
        }
        guard let token = json["access_token"] as? String, !token.isEmpty else {
            throw GitHubError(description: "GitHub's token response had no access_token")
        }
        return token
    }

    package func user(token: String) async throws(GitHubError) -> (id: Int64, login: String, email: String?) {
        guard let json = try await api("/user", token: token) as? [String: Any],
              let login = json["login"] as? String, let id = (json["id"] as? NSNumber)?.int64Value
        else { throw GitHubError(description: "GitHub's /user answer had no id and login") }
        return (id, login, json["email"] as? String)
    }

    /// Logins of the user's organisations.
    package func orgs(token: String) async throws(GitHubError) -> [String] {
        try await pages("/user/orgs", token: token).compactMap { $0["login"] as? String }
    }

    /// The user's teams as `org/team-slug`.
    package func teams(token: String) async throws(GitHubError) -> [String] {
        try await pages("/user/teams", token: token).compactMap { team in
            guard let slug = team["slug"] as? String, let org = (team["organization"] as? [String: Any])?["login"] as? String else { return nil }
            return "\(org)/\(slug)"
        }
    }

    /// Whether `user` is a member of `org` now (204 yes; 404 or 302 no), asked with the
    /// operator's membership token.
    package func isMember(org: String, user: String, token: String) async throws(GitHubError) -> Bool {
        try await membership("/orgs/\(Self.segment(org))/members/\(Self.segment(user))", token: token, answers: [204, 404, 302]).code == 204
    }

    /// Whether `user` is an active member of `org/team`.
    package func isTeamMember(org: String, team: String, user: String, token: String) async throws(GitHubError) -> Bool {
        let path = "/orgs/\(Self.segment(org))/teams/\(Self.segment(team))/memberships/\(Self.segment(user))"
        let (code, body) = try await membership(path, token: token, answers: [200, 404])
        guard code == 200 else { return false }
        return ((try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any])?["state"] as? String == "active"
    }

    /// A membership endpoint's answer; any status outside `answers` is a failed check.
    private func membership(_ path: String, token: String, answers: Set<UInt>) async throws(GitHubError) -> (code: UInt, body: ByteBuffer) {
        do {
            let response = try await http.execute(apiRequest(path, token: token), timeout: Self.timeout)
            let body = try await response.body.collect(upTo: Self.maxBody)
            guard answers.contains(response.status.code) else {
                throw GitHubError(description: "GitHub's membership check failed with HTTP \(response.status.code)")
            }
            return (response.status.code, body)
        } catch let error as GitHubError {
            throw error
        } catch {
            throw GitHubError(description: "GitHub's membership check failed: \(error)")
        }
    }

    package static func segment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: FormEncoding.unreserved) ?? text
    }

    private func apiRequest(_ path: String, token: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: configuration.apiURL + path)
        request.headers.add(name: "Accept", value: "application/vnd.github+json")
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "X-GitHub-Api-Version", value: "2022-11-28")
        request.headers.add(name: "User-Agent", value: "mcp-gateway")
        return request
    }

    /// Follows page numbers up to 10 pages of 100 (1 000 orgs or teams is past any allow-list's use).
    private func pages(_ path: String, token: String) async throws(GitHubError) -> [[String: Any]] {
        var all: [[String: Any]] = []
        for page in 1...10 {
            guard let items = try await api("\(path)?per_page=100&page=\(page)", token: token) as? [[String: Any]] else {
                throw GitHubError(description: "GitHub's \(path) answer was not a list")
            }
            all += items
            if items.count < 100 { break }
        }
        return all
    }

    private func api(_ path: String, token: String) async throws(GitHubError) -> Any {
        try await sendAny(apiRequest(path, token: token), what: path)
    }

    private func send(_ request: HTTPClientRequest, what: String) async throws(GitHubError) -> [String: Any] {
        guard let object = try await sendAny(request, what: what) as? [String: Any] else {
            throw GitHubError(description: "GitHub's \(what) answer was not a JSON object")
        }
        return object
    }

    private func sendAny(_ request: HTTPClientRequest, what: String) async throws(GitHubError) -> Any {
        do {
            let response = try await http.execute(request, timeout: Self.timeout)
            let body = try await response.body.collect(upTo: Self.maxBody)
            guard (200..<300).contains(response.status.code) else {
                throw GitHubError(description: "GitHub's \(what) failed with HTTP \(response.status.code)")
            }
            return try JSONSerialization.jsonObject(with: Data(buffer: body))
        } catch let error as GitHubError {
            throw error
        } catch {
            throw GitHubError(description: "GitHub's \(what) failed: \(error)")
        }
    }
}
