package import GatewayAuth
import HTTPTypes
package import Hummingbird

extension OAuthRefusal {
    /// The one rendering of an OAuth error: the RFC 6749 §5.2 body, never cached, with its
    /// challenge (RFC 6750 §3) and `Retry-After` when it has them.
    package var response: Response {
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store", OAuthResponses.pragma: "no-cache"]
        if let challenge { headers[.wwwAuthenticate] = challenge }
        if let retryAfter { headers[.retryAfter] = retryAfter }
        return JSONResponse.make(status: status, object: ["error": code, "error_description": description], headers: headers)
    }
}
