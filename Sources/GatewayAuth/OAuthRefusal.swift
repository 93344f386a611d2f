package import HTTPTypes

/// An OAuth error answer: status, RFC 6749 error code, description, and for a protected
/// resource its `WWW-Authenticate` challenge (RFC 6750 §3, RFC 9728 §5.1).
package struct OAuthRefusal: Sendable {
    package var status: HTTPResponse.Status
    package var code: String
    package var description: String
    package var challenge: String?
    package var retryAfter: String?

    package init(status: HTTPResponse.Status, code: String, description: String, challenge: String? = nil, retryAfter: String? = nil) {
        self.status = status
        self.code = code
        self.description = description
        self.challenge = challenge
        self.retryAfter = retryAfter
    }
}

