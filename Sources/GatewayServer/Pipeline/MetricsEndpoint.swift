import GatewayAuth
import GatewayConfig
import GatewayMetrics
import GatewayStdio
import GatewayStore
import HTTPTypes
import Hummingbird
import NIOCore

/// `metrics.prometheus`: the scrape path, answered by the front door on the configured entry
/// point (or every one) to clients in `allowFrom` (loopback by default). Anyone else gets the
/// 404 any unknown path gets, so the path does not announce itself.
struct MetricsEndpoint: Sendable {
    let metrics: GatewayMetrics
    let configuration: MetricsConfiguration
    let entryPoint: EntryPoint
    let holder: ConfigurationHolder
    let stdio: StdioRegistry
    /// Pinged for `mcp_gateway_store_up`; nil when state lives in memory.
    let store: (any KeyValueStore)?

    init(metrics: GatewayMetrics, configuration: MetricsConfiguration, entryPoint: EntryPoint, holder: ConfigurationHolder, stdio: StdioRegistry, store: (any KeyValueStore)?) {
        self.metrics = metrics
        self.configuration = configuration
        self.entryPoint = entryPoint
        self.holder = holder
        self.stdio = stdio
        self.store = store
    }

    /// Whether this request is a scrape this entry point serves.
    func serves(_ request: Request, clientIP: String?) -> Bool {
        guard request.uri.path == configuration.path, request.method == .get || request.method == .head else { return false }
        if let only = configuration.entryPoint, only != entryPoint.name { return false }
        return ClientAddress.isTrusted(clientIP, configuration.allowFrom)
    }

    func respond() async -> Response {
        let runtime = holder.current
        var snapshot = GatewayMetrics.Snapshot()
        snapshot.routers = runtime.configuration.routers.map(\.name)
        for manager in stdio.allManagers {
            let counts = manager.childCounts
            var states = snapshot.stdioChildren[manager.service.name] ?? [:]
            states["session", default: 0] += counts.sessions
            states["pool", default: 0] += counts.pool
            states["spare", default: 0] += counts.spares
            snapshot.stdioChildren[manager.service.name] = states
        }
        snapshot.acceptedReloads = runtime.generation - 1
        snapshot.rejectedReloads = holder.rejectedReloads
        if let store {
            snapshot.storeUp = (try? await store.ping()) != nil
        }
        let body = metrics.exposition(snapshot)
        var buffer = ByteBuffer()
        buffer.writeBytes(body)
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: buffer)
        )
    }
}
