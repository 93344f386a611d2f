"""OpenTelemetry traces: a small OTLP/HTTP receiver (the official opentelemetry-proto messages)
gets a span tree per request (server span, token check, store, upstream), an incoming
`traceparent` is honoured, and the trace reaches an HTTP upstream (`traceparent` header) and a
stdio child (`params._meta.traceparent`); the audit record carries the trace id."""

from __future__ import annotations

import json
import os
import sys

import httpx

from conftest import SERVERS, free_port, port_open, start_process, wait_until
from test_attacks import World, bearer, start_gateway


def config(redis_url: str, upstream: str, collector: str, password_hash: str, audit_file) -> str:
    return f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    store:
      redis:
        url: "{redis_url}"
    audit:
      file: "{audit_file}"
    tracing:
      otlp:
        endpoint: "{collector}"
      serviceName: "gateway-under-test"
    auth:
      allow:
        users: ["alice"]
      local:
        users:
          alice: "{password_hash}"
    routers:
      echo:
        rule: "PathPrefix(`/echo`)"
        service: echo
      raw:
        rule: "PathPrefix(`/raw`)"
        service: raw
        auth: none
    services:
      echo:
        http:
          url: "{upstream}/echo"
      raw:
        stdio:
          command: "{sys.executable}"
          args: ["{SERVERS / 'raw_stdio_server.py'}"]
    """


SERVER, CLIENT = 2, 3  # OTLP SpanKind


def test_span_tree_and_trace_propagation(tmp_path_factory, redis_server, local_password_hash):
    tmp = tmp_path_factory.mktemp("tracing")
    collector_port, upstream_port = free_port(), free_port()
    collector = start_process("otlp-receiver", [sys.executable, str(SERVERS / "otlp_receiver.py"), "--port", str(collector_port)], tmp)
    upstream = start_process("raw-upstream", [sys.executable, str(SERVERS / "raw_upstream.py"), "--port", str(upstream_port)], tmp)
    wait_until(lambda: port_open(collector_port) and port_open(upstream_port), what="the collector and the upstream")
    audit_file = tmp / "audit.log"
    gateway = start_gateway(tmp, config(redis_server.url, f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{collector_port}",
                                        local_password_hash, audit_file), name="traced")
    spans_url = f"http://127.0.0.1:{collector_port}/spans"
    try:
        world = World(gateway, redis_server.port, "", tmp, local_password_hash)
        token = world.token("alice", "echo")

        # A caller already in a trace: the gateway's server span continues it.
        trace_id, caller_span = os.urandom(16).hex(), os.urandom(8).hex()
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "lookup", "arguments": {}}}
        echoed = httpx.post(world.url("/echo/mcp"), json=call, headers=bearer(token, traceparent=f"00-{trace_id}-{caller_span}-01"), timeout=10)
        assert echoed.status_code == 200
        sent_upstream = dict(echoed.json()["headers"])["traceparent"].split("-")
        assert sent_upstream[1] == trace_id and sent_upstream[2] != caller_span  # a child of the gateway's span

        def trace(tid):
            return [s for s in httpx.get(spans_url, timeout=5).json() if s["trace_id"] == tid]

        wait_until(lambda: any(s["name"].startswith("upstream") for s in trace(trace_id)), what="the request's spans exported", timeout=20)
        spans = trace(trace_id)
        server = next(s for s in spans if s["kind"] == SERVER)
        assert server["parent_span_id"] == caller_span and server["service"] == "gateway-under-test"
        assert server["name"] == "tools/call lookup"
        attributes = server["attributes"]
        assert attributes["mcp.method.name"] == "tools/call" and attributes["gen_ai.tool.name"] == "lookup"
        assert attributes["jsonrpc.request.id"] == "7"
        assert attributes["enduser.id"] == "alice" and attributes["mcp_gateway.router"] == "echo"
        assert attributes["http.response.status_code"] == 200 and len(attributes["mcp.session.id"]) == 16
        children = {s["name"]: s for s in spans if s["parent_span_id"] == server["span_id"]}
        assert {"token check", "upstream echo"} <= children.keys(), children.keys()
        upstream_span = children["upstream echo"]
        assert upstream_span["kind"] == CLIENT
        # What the upstream was told is the upstream span, or the HTTP client's span under it.
        told = next(s for s in spans if s["span_id"] == sent_upstream[2])
        assert told["span_id"] == upstream_span["span_id"] or told["parent_span_id"] == upstream_span["span_id"], told
        # The store's round trips are spans too (the token's revocation checks, under the token check).
        token_check = children["token check"]
        assert any(s["name"].startswith("redis ") and s["parent_span_id"] == token_check["span_id"] for s in spans), [s["name"] for s in spans]

        # The audit record names the trace.
        wait_until(lambda: audit_file.exists() and any(json.loads(l).get("trace_id") == trace_id for l in audit_file.read_text().splitlines()),
                   what="the trace id in the audit log")

        # A stdio child gets the trace in params._meta.traceparent.
        legacy = {"Accept": "application/json, text/event-stream"}
        started = httpx.post(world.url("/raw/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}, headers=legacy, timeout=30)
        session = {**legacy, "Mcp-Session-Id": started.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
        stdio_trace = os.urandom(16).hex()
        answer = httpx.post(world.url("/raw/mcp"), json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "meta", "arguments": {}}},
                            headers={**session, "traceparent": f"00-{stdio_trace}-{os.urandom(8).hex()}-01"}, timeout=30)
        text = answer.text
        body = json.loads(text[text.index("{"):text.rindex("}") + 1]) if answer.headers["content-type"].startswith("text/event-stream") else answer.json()
        meta = json.loads(body["result"]["content"][0]["text"])
        assert meta["traceparent"].split("-")[1] == stdio_trace
        wait_until(lambda: any(s["name"] == "upstream raw" for s in trace(stdio_trace)), what="the stdio request's spans", timeout=20)
        child_parent = meta["traceparent"].split("-")[2]
        assert next(s for s in trace(stdio_trace) if s["name"] == "upstream raw")["span_id"] == child_parent
    finally:
        gateway.managed.stop()
        upstream.stop()
        collector.stop()
