@testable import GatewayMetrics
import Testing

/// The series as Prometheus renders them: names, labels, and the bounds on client-chosen labels.
@Suite struct GatewayMetricsTests {
    private func text(_ metrics: GatewayMetrics, _ snapshot: GatewayMetrics.Snapshot = .init()) -> String {
        String(decoding: metrics.exposition(snapshot), as: UTF8.self)
    }

    @Test func anOperationIsAHistogramWithTheSemanticConventionLabels() {
        let metrics = GatewayMetrics()
        metrics.operation(method: "tools/call", tool: "get_time", router: "time", errorType: nil, duration: .milliseconds(3))
        metrics.operation(method: "tools/list", tool: "ignored", router: "time", errorType: "-32601", duration: .milliseconds(30))
        let text = text(metrics)
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="get_time",router="time",error_type=""} 1"#))
        // The tool label is set for tools/call only.
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/list",gen_ai_tool_name="",router="time",error_type="-32601"} 1"#))
        #expect(text.contains(#"mcp_server_operation_duration_seconds_bucket{mcp_method_name="tools/call",gen_ai_tool_name="get_time",router="time",error_type="",le="0.005"} 1"#))
    }

    @Test func aConnectionsHandlesRecordIntoTheSeriesOfTheValuesAskedEachTime() {
        let metrics = GatewayMetrics()
        var handles = GatewayMetrics.LocalHandles()
        // Alternating values: a handle kept for one set of labels must never take another's.
        for (method, tool, errorType) in [
            ("tools/call", "a", nil), ("tools/call", "a", nil), ("tools/call", "b", nil), ("tools/call", "a", "-32602"),
            ("tools/list", "a", nil), ("tools/list", "b", nil), ("tools/call", "a", nil),
        ] as [(String, String?, String?)] {
            metrics.operation(method: method, tool: tool, router: "r", errorType: errorType, seconds: 0.001, handles: &handles)
        }
        for (router, status) in [("r", 200), ("r", 200), ("r", 404), ("s", 200)] {
            metrics.request(router: router, status: status, handles: &handles)
        }
        for service in ["up", "up", "other"] {
            metrics.upstream(service: service, seconds: 0.002, handles: &handles)
        }
        let text = text(metrics)
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="a",router="r",error_type=""} 3"#))
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="b",router="r",error_type=""} 1"#))
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="a",router="r",error_type="-32602"} 1"#))
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/list",gen_ai_tool_name="",router="r",error_type=""} 2"#))
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="r",code="2xx"} 2"#))
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="r",code="4xx"} 1"#))
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="s",code="2xx"} 1"#))
        #expect(text.contains(#"mcp_gateway_upstream_duration_seconds_count{service="up"} 2"#))
        #expect(text.contains(#"mcp_gateway_upstream_duration_seconds_count{service="other"} 1"#))
    }

    /// The fast relay's one call per finished request records what the three separate calls
    /// would, into the same series, mixed with them on one connection's handles.
    @Test func aRelayedRequestRecordsItsCountUpstreamTimeAndOperationAtOnce() {
        let metrics = GatewayMetrics()
        var handles = GatewayMetrics.LocalHandles()
        metrics.relayed(router: "r", status: 200, service: "up", upstreamSeconds: 0.002, method: "tools/call", tool: "a", errorType: nil, seconds: 0.003, handles: &handles)
        metrics.operation(method: "tools/call", tool: "a", router: "r", errorType: nil, seconds: 0.001, handles: &handles)
        metrics.relayed(router: "r", status: 502, service: "up", upstreamSeconds: 0.5, method: "tools/call", tool: "a", errorType: "502", seconds: 0.5, handles: &handles)
        // Not an MCP request (no method): counted, and the upstream's time, without an operation.
        metrics.relayed(router: "r", status: 200, service: "other", upstreamSeconds: 0.002, method: nil, tool: nil, errorType: nil, seconds: 0.003, handles: &handles)
        let text = text(metrics)
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="a",router="r",error_type=""} 2"#))
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="a",router="r",error_type="502"} 1"#))
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("mcp_server_operation_duration_seconds_count") }.count == 2)
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="r",code="2xx"} 2"#))
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="r",code="5xx"} 1"#))
        #expect(text.contains(#"mcp_gateway_upstream_duration_seconds_count{service="up"} 2"#))
        #expect(text.contains(#"mcp_gateway_upstream_duration_seconds_count{service="other"} 1"#))
        #expect(text.contains(#"mcp_gateway_upstream_duration_seconds_bucket{service="up",le="0.5"} 2"#))
        #expect(text.contains("# HELP mcp_gateway_upstream_duration_seconds "))
    }

    /// A connection's handles hold series unretained, kept alive by their instance: handles
    /// filled by one instance and then used with another record into the other's series only,
    /// and keep the first instance's series alive while they point at them.
    @Test func handlesFilledByAnotherInstanceAreNotUsedForThisOne() {
        var handles = GatewayMetrics.LocalHandles()
        var first: GatewayMetrics? = GatewayMetrics()
        weak let firstInstance = first
        first?.relayed(router: "r", status: 200, service: "up", upstreamSeconds: 0.002, method: "tools/call", tool: "a", errorType: nil, seconds: 0.003, handles: &handles)
        first = nil
        #expect(firstInstance != nil, "the handles keep their instance alive")
        let second = GatewayMetrics()
        second.relayed(router: "r", status: 200, service: "up", upstreamSeconds: 0.002, method: "tools/call", tool: "a", errorType: nil, seconds: 0.003, handles: &handles)
        second.request(router: "r", status: 200, handles: &handles)
        second.upstream(service: "up", seconds: 0.001, handles: &handles)
        let text = text(second)
        #expect(text.contains(#"mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",gen_ai_tool_name="a",router="r",error_type=""} 1"#))
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="r",code="2xx"} 2"#))
        #expect(text.contains(#"mcp_gateway_upstream_duration_seconds_count{service="up"} 2"#))
        #expect(firstInstance == nil, "handles moved to another instance let the first go")
    }

    @Test func inventedToolNamesFoldIntoOtherBeyondTheBudget() {
        let metrics = GatewayMetrics()
        for index in 0..<600 {
            metrics.operation(method: "tools/call", tool: "tool-\(index)", router: "r", errorType: nil, duration: .milliseconds(1))
        }
        metrics.operation(method: "tools/call", tool: String(repeating: "x", count: 200), router: "r", errorType: nil, duration: .milliseconds(1))
        let text = text(metrics)
        let series = text.split(separator: "\n").filter { $0.hasPrefix("mcp_server_operation_duration_seconds_count") }
        #expect(series.count == 513)
        #expect(text.contains(#"gen_ai_tool_name="_other",router="r",error_type=""} 89"#))
    }

    @Test func gaugesComeFromTheSnapshotAndReadZeroOnceTheirSeriesIsGone() {
        let metrics = GatewayMetrics()
        var snapshot = GatewayMetrics.Snapshot()
        snapshot.routers = ["notes", "time"]
        metrics.sessionUsed(router: "notes", id: "a")
        metrics.sessionUsed(router: "notes", id: "b")
        metrics.sessionUsed(router: "notes", id: "a")
        snapshot.stdioChildren = ["time": ["session": 1, "spare": 2]]
        snapshot.storeUp = false
        var text = text(metrics, snapshot)
        #expect(text.contains(#"mcp_gateway_sessions{router="notes"} 2"#))
        #expect(text.contains(#"mcp_gateway_sessions{router="time"} 0"#))
        #expect(text.contains(#"mcp_gateway_stdio_children{service="time",state="spare"} 2"#))
        #expect(text.contains(#"mcp_gateway_stdio_children{service="time",state="pool"} 0"#))
        #expect(text.contains("mcp_gateway_store_up 0"))
        metrics.sessionEnded(router: "notes", id: "a")
        metrics.sessionEnded(router: "notes", id: "b")
        text = self.text(metrics, GatewayMetrics.Snapshot())
        #expect(text.contains(#"mcp_gateway_sessions{router="notes"} 0"#))
        #expect(text.contains("mcp_gateway_store_up 1"))
    }

    @Test func reloadTotalsCountOnlyWhatHappenedSinceTheLastScrape() {
        let metrics = GatewayMetrics()
        var snapshot = GatewayMetrics.Snapshot()
        #expect(text(metrics, snapshot).contains(#"mcp_gateway_config_reloads_total{result="accepted"} 0"#))
        snapshot.acceptedReloads = 2
        snapshot.rejectedReloads = 1
        _ = text(metrics, snapshot)
        let text = text(metrics, snapshot)
        #expect(text.contains(#"mcp_gateway_config_reloads_total{result="accepted"} 2"#))
        #expect(text.contains(#"mcp_gateway_config_reloads_total{result="rejected"} 1"#))
    }

    @Test func countersCarryTheirLabels() {
        let metrics = GatewayMetrics()
        metrics.authFailure(router: "notes", reason: "invalid_token")
        metrics.rateLimited(router: "notes")
        metrics.tokenIssued(grantType: "authorization_code")
        metrics.stdioSpawnFailure(service: "broken")
        metrics.request(router: "", status: 404)
        let text = text(metrics)
        #expect(text.contains(#"mcp_gateway_auth_failures_total{router="notes",reason="invalid_token"} 1"#))
        #expect(text.contains(#"mcp_gateway_rate_limited_total{router="notes"} 1"#))
        #expect(text.contains(#"mcp_gateway_tokens_issued_total{grant_type="authorization_code"} 1"#))
        #expect(text.contains(#"mcp_gateway_stdio_spawn_failures_total{service="broken"} 1"#))
        #expect(text.contains(#"mcp_gateway_http_requests_total{router="",code="4xx"} 1"#))
    }
}
