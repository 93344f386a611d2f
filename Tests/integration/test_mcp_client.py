"""The official MCP Python SDK client, through the gateway, against a real SDK server, in both eras."""

import time

import anyio
import httpx
import pytest
from mcp import Client


CONFIG = """
entryPoints:
  web:
    address: "127.0.0.1:{port}"
publicURL: "http://127.0.0.1:{port}"
routers:
  tools:
    rule: "PathPrefix(`/tools`)"
    service: tools
    auth: none
services:
  tools:
    http:
      url: "UPSTREAM"
"""


@pytest.fixture
def gateway(start_gateway, mcp_upstream):
    return start_gateway(CONFIG.replace("UPSTREAM", mcp_upstream))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
def test_tools_through_the_gateway(gateway, mode):
    async def scenario():
        progress_times: list[float] = []

        async def on_progress(progress, total, message):
            progress_times.append(time.monotonic())

        async with Client(gateway.url("/tools/mcp"), mode=mode) as client:
            expected_version = "2025-11-25" if mode == "legacy" else "2026-07-28"
            assert client.protocol_version == expected_version
            tools = await client.list_tools()
            assert {tool.name for tool in tools.tools} >= {"echo", "count", "pid"}
            echoed = await client.call_tool("echo", {"text": "through the gateway"})
            assert echoed.content[0].text == "through the gateway"
            steps, delay = 4, 0.25
            result = await client.call_tool("count", {"steps": steps, "delay_seconds": delay}, progress_callback=on_progress)
            finished = time.monotonic()
            assert result.content[0].text == f"counted {steps}"
            assert len(progress_times) == steps
            # Streamed, not buffered: the first notification arrived about (steps) delays before the result.
            assert finished - progress_times[0] > (steps - 1) * delay * 0.8, (progress_times, finished)

    anyio.run(scenario)


def test_legacy_session_delete(gateway):
    endpoint = gateway.url("/tools/mcp")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with httpx.Client(timeout=10) as http:
        response = http.post(endpoint, json=initialize, headers=headers)
        assert response.status_code == 200
        session = response.headers["mcp-session-id"]
        session_headers = {**headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        initialized = http.post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session_headers)
        assert initialized.status_code == 202
        listed = http.post(endpoint, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session_headers)
        assert listed.status_code == 200
        deleted = http.delete(endpoint, headers=session_headers)
        assert deleted.status_code in (200, 204)
        after = http.post(endpoint, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=session_headers)
        assert after.status_code == 404
