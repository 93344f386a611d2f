"""2026-07-28 clients on an HTTP route whose upstream speaks only the session-based protocol
(the mcp 1.x SDK in .venv-legacy), and session-based clients of a 2026-07-28-only upstream
(hand-written): the gateway probes the upstream's era, keeps upstream sessions per identity and
translates both ways."""

import sys

import anyio
import mcp_types as types
import pytest
from mcp import Client

from conftest import REPO, SERVERS, free_port, modern_body, modern_headers, port_open, start_process, wait_until


def upstream_gateway(start_gateway, processes, tmp_path, name: str, argv: list[str]):
    """Starts an HTTP MCP upstream and a gateway routing `/<name>` to it (auth: none)."""
    port = free_port()
    upstream = start_process(f"{name}-http", [*argv, "--port", str(port)], tmp_path)
    processes.append(upstream)
    wait_until(lambda: upstream.process.poll() is None and port_open(port), what=f"{name} HTTP upstream")
    return start_gateway(f"""
    entryPoints:
      web:
        address: "127.0.0.1:{{port}}"
    publicURL: "http://127.0.0.1:{{port}}"
    routers:
      {name}:
        rule: "PathPrefix(`/{name}`)"
        service: {name}
        auth: none
    services:
      {name}:
        http:
          url: "http://127.0.0.1:{port}/mcp"
    """)


@pytest.fixture
def legacy_gateway(start_gateway, processes, tmp_path):
    return upstream_gateway(start_gateway, processes, tmp_path, "legacy", [str(REPO / ".venv-legacy" / "bin" / "python"), str(SERVERS / "legacy_server.py")])


@pytest.fixture
def modern_gateway(start_gateway, processes, tmp_path):
    return upstream_gateway(start_gateway, processes, tmp_path, "modern", [sys.executable, str(SERVERS / "modern_http_server.py")])


def test_modern_client_reaches_a_legacy_http_upstream(legacy_gateway):
    gateway = legacy_gateway

    async def run(mode):
        updates = []

        async def on_progress(progress, total, message):
            updates.append(progress)

        async with Client(gateway.url("/legacy/mcp"), mode=mode) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo", {"text": "across eras"})
            counted = await client.call_tool("count", {"steps": 2}, progress_callback=on_progress)
            return names, echoed.content[0].text, counted.content[0].text, updates

    for mode in ("2026-07-28", "auto", "legacy"):
        names, echoed, counted, updates = anyio.run(run, mode)
        assert {"echo", "count"} <= names and echoed == "across eras" and counted == "counted 2", mode
        assert updates == [1, 2], mode
    assert "upstream era detected" in gateway.managed.log() and "era=session-based" in gateway.managed.log()


def test_modern_clients_reach_a_modern_only_http_upstream(modern_gateway):
    gateway = modern_gateway

    async def run(mode):
        async with Client(gateway.url("/modern/mcp"), mode=mode) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo", {"text": "as is"})
            return names, echoed.content[0].text

    for mode in ("2026-07-28", "auto"):
        names, echoed = anyio.run(run, mode)
        assert {"echo", "whoami"} <= names and echoed == "as is", mode


def test_session_based_client_reaches_a_modern_only_http_upstream(modern_gateway):
    gateway = modern_gateway

    async def run():
        async with Client(gateway.url("/modern/mcp"), mode="legacy", client_info=types.Implementation(name="old-client", version="1")) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            echoed = await client.call_tool("echo", {"text": "bridged"})
            who = await client.call_tool("whoami", {})
            return names, echoed.content[0].text, who.content[0].text

    names, echoed, who = anyio.run(run)
    assert {"echo", "whoami"} <= names and echoed == "bridged" and who == "old-client"

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "saffron"})

    async def ask():
        async with Client(gateway.url("/modern/mcp"), mode="legacy", elicitation_callback=elicitation) as client:
            return (await client.call_tool("ask", {})).content[0].text

    # The upstream's InputRequiredResult became an elicitation on the client's stream, then a retry.
    assert anyio.run(ask) == "user likes saffron (http-state)"
    assert "bridged to a 2026-07-28-only upstream" in gateway.managed.log()


def test_a_legacy_http_upstreams_ask_becomes_a_multi_round_trip_request(legacy_gateway):
    gateway = legacy_gateway

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"colour": "ochre"})

    async def run(callback):
        async with Client(gateway.url("/legacy/mcp"), mode="2026-07-28", elicitation_callback=callback) as client:
            return (await client.call_tool("ask_user", {})).content[0].text

    assert anyio.run(run, elicitation) == "user likes ochre"
    # Without the elicitation capability the upstream's ask is refused to it, promptly, not hung.
    refused = anyio.run(run, None)
    assert "user likes" not in refused


def test_closing_the_stream_cancels_the_request_in_a_legacy_http_upstream(legacy_gateway, tmp_path):
    import httpx

    marker = tmp_path / "cancelled"
    body, headers = modern_body("tools/call", {"name": "wait_for_cancel", "arguments": {"marker": str(marker)}}), modern_headers("tools/call", "wait_for_cancel")
    body["params"]["_meta"]["progressToken"] = "p"
    with httpx.stream("POST", legacy_gateway.url("/legacy/mcp"), json=body, headers=headers, timeout=30) as response:
        # The first progress event: the request is running in the upstream. Then the client goes.
        assert next(line for line in response.iter_lines() if line.startswith("data:"))
    wait_until(marker.exists, timeout=15, what="the upstream to hear notifications/cancelled")


def test_clients_of_one_identity_may_reuse_request_ids(legacy_gateway):
    # Both share the identity's upstream session: the gateway's own ids keep their requests apart.
    import concurrent.futures

    import httpx

    def call(steps: int) -> str:
        body, headers = modern_body("tools/call", {"name": "count", "arguments": {"steps": steps}}), modern_headers("tools/call", "count")
        answer = httpx.post(legacy_gateway.url("/legacy/mcp"), json=body, headers=headers, timeout=30)
        return answer.json()["result"]["content"][0]["text"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, [3, 5, 7, 9]))
    assert results == ["counted 3", "counted 5", "counted 7", "counted 9"]
