"""Prometheus metrics: the required series, parsed with the prometheus_client parser, moving
after real calls through an HTTP and a stdio router; the scrape path served only where and to
whom it is configured."""

from __future__ import annotations

import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import World, bearer, start_gateway


def config(upstream: str, metrics_port: int, password_hash: str) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        trustedProxies: ["127.0.0.1"]
      metrics:
        address: "127.0.0.1:{metrics_port}"
    publicURL: "http://127.0.0.1:{{port}}"
    metrics:
      prometheus:
        entryPoint: metrics
    auth:
      allow:
        users: ["alice"]
      local:
        users:
          alice: "{password_hash}"
    middlewares:
      tight:
        rateLimit: {{ average: 1, period: 1m }}
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
        middlewares: [tight]
      time:
        rule: "PathPrefix(`/time`)"
        service: time
        auth: none
      broken:
        rule: "PathPrefix(`/broken`)"
        service: broken
        auth: none
    services:
      echo:
        http:
          url: "{upstream}/echo"
      time:
        stdio:
          command: "mcp-server-time"
          args: ["--local-timezone=UTC"]
      broken:
        stdio:
          command: "no-such-mcp-server-command"
    """


def scrape(url: str) -> dict[str, list]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict, name: str, **labels) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(matching)


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "metrics-test", "version": "1"}}}
STREAM = {"Accept": "application/json, text/event-stream"}


def test_required_series_move_after_calls(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("metrics")
    upstream_port = free_port()
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(upstream_port), what="the echo upstream")
    metrics_port = free_port()
    gateway = start_gateway(tmp, config(f"http://127.0.0.1:{upstream_port}", metrics_port, local_password_hash), name="metered")
    scrape_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        before = scrape(scrape_url)
        assert value(before, "mcp_gateway_store_up") == 1
        assert value(before, "mcp_gateway_config_reloads_total", result="accepted") == 0

        world = World(gateway, 0, "", tmp, local_password_hash)
        token = world.token("alice", "echo")
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "lookup", "arguments": {}}}
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(token), timeout=10).status_code == 200
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(token), timeout=10).status_code == 429
        assert httpx.post(world.url("/echo/mcp"), json=call, headers=bearer("not-a-token"), timeout=10).status_code == 401
        assert httpx.post(world.url("/echo/mcp"), json=call, timeout=10).status_code == 401

        # A session with the stdio time server: initialize, a tool call, and it stays open.
        started = httpx.post(world.url("/time/mcp"), json=INITIALIZE, headers=STREAM, timeout=30)
        assert started.status_code == 200, started.text
        session = {**STREAM, "Mcp-Session-Id": started.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
        httpx.post(world.url("/time/mcp"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session, timeout=10)
        get_time = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_current_time", "arguments": {"timezone": "UTC"}}}
        assert httpx.post(world.url("/time/mcp"), json=get_time, headers=session, timeout=30).status_code == 200
        # A child that cannot be started.
        assert httpx.post(world.url("/broken/mcp"), json=INITIALIZE, headers=STREAM, timeout=30).status_code >= 500

        after = scrape(scrape_url)
        operation = "mcp_server_operation_duration_seconds_count"
        assert value(after, operation, mcp_method_name="tools/call", gen_ai_tool_name="lookup", router="echo", error_type="") == 1
        # The rate-limited call is an operation that failed with the JSON-RPC error code.
        assert value(after, operation, mcp_method_name="tools/call", gen_ai_tool_name="lookup", router="echo", error_type="-32000") == 1
        assert value(after, operation, mcp_method_name="tools/call", gen_ai_tool_name="get_current_time", router="time", error_type="") == 1
        assert value(after, operation, mcp_method_name="initialize", router="time") == 1
        assert value(after, "mcp_gateway_upstream_duration_seconds_count", service="echo") == 1
        assert value(after, "mcp_gateway_upstream_duration_seconds_count", service="time") >= 2
        assert value(after, "mcp_gateway_rate_limited_total", router="echo") == 1
        assert value(after, "mcp_gateway_auth_failures_total", router="echo", reason="invalid_token") == 1
        assert value(after, "mcp_gateway_auth_failures_total", router="echo", reason="missing_token") == 1
        assert value(after, "mcp_gateway_tokens_issued_total", grant_type="authorization_code") == 1
        assert value(after, "mcp_gateway_sessions", router="time") == 1
        # The echo upstream hands out a session with every answer outside one: the first call's.
        assert value(after, "mcp_gateway_sessions", router="echo") == 1
        assert value(after, "mcp_gateway_stdio_children", service="time", state="session") == 1
        assert value(after, "mcp_gateway_stdio_spawn_failures_total", service="broken") >= 1
        # Histograms have their buckets; no series names a user.
        assert any(s.labels.get("le") == "+Inf" for s in after[operation.replace("_count", "_bucket")])
        assert not any("alice" in str(s.labels) for samples in after.values() for s in samples)

        # The session ends with a DELETE, and the gauge follows.
        assert httpx.delete(world.url("/time/mcp"), headers=session, timeout=10).status_code in (200, 202, 204)
        wait_until(lambda: value(scrape(scrape_url), "mcp_gateway_sessions", router="time") == 0, what="the session gauge at 0")

        # A reload moves the reload counter.
        config_path = tmp / "metered.yaml"
        config_path.write_text(config_path.read_text().replace("average: 1, period: 1m", "average: 2, period: 1m"))
        wait_until(lambda: value(scrape(scrape_url), "mcp_gateway_config_reloads_total", result="accepted") == 1, what="the accepted reload")
    finally:
        gateway.managed.stop()
        upstream.stop()


def test_the_scrape_path_is_served_only_where_and_to_whom_it_is_configured(tmp_path_factory, local_password_hash):
    tmp = tmp_path_factory.mktemp("metrics-access")
    metrics_port = free_port()
    gateway = start_gateway(tmp, f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
        trustedProxies: ["127.0.0.1"]
      metrics:
        address: "127.0.0.1:{metrics_port}"
    publicURL: "http://127.0.0.1:{{port}}"
    metrics:
      prometheus:
        path: /internal/metrics
    routers:
      open:
        rule: "PathPrefix(`/open`)"
        service: open
        auth: none
    services:
      open:
        http:
          url: "http://127.0.0.1:9/mcp"
    """, name="metrics-access")
    try:
        # Every entry point serves it (no entryPoint set), to loopback clients only.
        assert httpx.get(gateway.url("/internal/metrics"), timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/internal/metrics", timeout=10).status_code == 200
        # A client forwarded by a trusted proxy is judged by its own address.
        forwarded = httpx.get(gateway.url("/internal/metrics"), headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
        assert forwarded.status_code == 404 and "mcp_gateway" not in forwarded.text
        # Near misses are not the scrape path.
        for path in ("/internal/metrics/", "/internal//metrics", "/internal/%6detrics", "/metrics", "/INTERNAL/metrics"):
            response = httpx.get(gateway.url(path), timeout=10)
            assert "mcp_gateway" not in response.text, path
        assert httpx.post(gateway.url("/internal/metrics"), timeout=10).status_code != 200
    finally:
        gateway.managed.stop()
