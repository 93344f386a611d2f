import Foundation
import GatewayConfig
import GatewayServer
import GatewayStore
import HTTPTypes
package import Hummingbird
package import HummingbirdTesting
import Logging
import NIOCore
import NIOFoundationEssentialsCompat

/// Shared support for tests that drive the gateway in process: the application built from a
/// gateway.yaml text with a `MemoryStore` (as `mcp-gateway run` builds it, minus the listeners),
/// and an MCP-shaped upstream to put behind it.
package enum TestGateway {
    /// Runs `test` against the gateway's first entry point in router mode (no socket on the
    /// gateway's side), then releases its clients and children.
    package static func run(yaml: String, _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let configuration = try ConfigurationLoader(environment: [:]).load(yaml: yaml)
        let logger = Logger(label: "test")
        let components = try GatewayComponents(configuration: configuration, store: MemoryStore(), logger: logger)
        let app = Application(responder: components.responder(for: configuration.entryPoints[0], readinessStore: nil), logger: logger)
        do {
            try await app.test(.router) { client in try await test(client) }
        } catch {
            await components.shutdown()
            throw error
        }
        await components.shutdown()
    }

    /// A JSON object body of a test response.
    package static func json(_ response: TestResponse) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any] else {
            throw TestGatewayError("the body is not a JSON object: \(String(buffer: response.body))")
        }
        return object
    }
}

/// An MCP-shaped HTTP upstream on a free port of 127.0.0.1: `POST /mcp` answers every message
/// with a result holding the request headers it received (names lowercased) and hands out
/// session `up-1`.
package enum EchoUpstream {
    package static let sessionID = "up-1"

    package static func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("/mcp") { request, _ -> Response in
            var seen: [String: String] = [:]
            for field in request.headers { seen[field.name.canonicalName.lowercased()] = field.value }
            let result = try JSONSerialization.data(withJSONObject: ["jsonrpc": "2.0", "id": 1, "result": ["headers": seen]])
            var headers: HTTPFields = [.contentType: "application/json"]
            if let name = HTTPField.Name("Mcp-Session-Id") { headers[name] = sessionID }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: result)))
        }
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: Logger(label: "upstream"))
    }

    /// The headers the upstream saw, from one of its answers.
    package static func seenHeaders(_ response: TestResponse) throws -> [String: String] {
        guard let headers = (try TestGateway.json(response)["result"] as? [String: Any])?["headers"] as? [String: String] else {
            throw TestGatewayError("not an echo answer: \(String(buffer: response.body))")
        }
        return headers
    }
}

package struct TestGatewayError: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}
