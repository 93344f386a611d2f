"""`log.format: json` and the access log: every line an object, one line per request, no query
strings (they can carry codes and states) and no secrets."""

import json

import httpx

from conftest import free_port, port_open, start_process, wait_until, gateway_binary


def test_json_lines_and_an_access_line_per_request(tmp_path, raw_upstream):
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
entryPoints:
  web:
    address: "127.0.0.1:{port}"
publicURL: "http://127.0.0.1:{port}"
log:
  format: json
routers:
  echo:
    rule: "PathPrefix(`/echo`)"
    service: echo
    auth: none
services:
  echo:
    http:
      url: "{raw_upstream}/echo"
""")
    gateway = start_process("gateway", [gateway_binary(), "serve", "--config", str(config)], tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: port_open(port) and httpx.get(f"{base}/healthz", timeout=1).status_code == 200, what="gateway")
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "lookup", "arguments": {"q": "x"}}}
        answered = httpx.post(f"{base}/echo/mcp", json=call, headers={"Accept": "application/json, text/event-stream"}, timeout=10)
        assert answered.status_code == 200
        # A query that must not reach the log (an authorization code and state look like this).
        httpx.get(f"{base}/authorize?code=query-secret-code&state=query-secret-state", timeout=10)
    finally:
        gateway.stop()
    lines = [line for line in gateway.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["time"].endswith("Z") and "T" in record["time"]
    access = [r for r in records if r["logger"] == "mcp-gateway.access"]
    mcp = next(r for r in access if r["path"] == "/echo/mcp")
    assert mcp["method"] == "POST" and mcp["status"] == "200" and mcp["router"] == "echo"
    assert mcp["mcp_method"] == "tools/call" and mcp["tool"] == "lookup" and int(mcp["duration_ms"]) >= 0
    authorize = next(r for r in access if r["path"] == "/authorize")
    assert authorize["method"] == "GET"
    assert "query-secret" not in gateway.log()
    # Slashes are written as they are.
    assert "\\/" not in gateway.log()
