import Foundation
package import HTTPTypes
package import Hummingbird

/// A JSON object as a response (keys sorted, so answers are stable byte for byte).
package enum JSONResponse {
    package static func make(status: HTTPResponse.Status, object: Any, headers: HTTPFields = [.contentType: "application/json"]) -> Response {
        let data = encode(object)
        var headers = headers
        if headers[.contentType] == nil { headers[.contentType] = "application/json" }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    package static func encode(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8))
    }
}
